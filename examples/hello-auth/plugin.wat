;; hello-auth: an auth-only tark provider (ABI §3.1: exporting provider_auth_credentials selects auth-only mode)
;; plus the legacy auth exports of ABI §3.2. The token comes from tark:storage key "token" (set by
;; init_with_credentials) or else from $HELLO_TOKEN (tark:env); the endpoint from $HELLO_ENDPOINT, else
;; https://api.example.com/v1/chat/completions (tark posts to the endpoint exactly as given). Both are inserted into JSON as they are, so they must not contain quotes or
;; backslashes.
(module
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:storage" "delete" (func $storage_delete (param i32 i32) (result i32)))
  (import "tark:env" "get" (func $env_get (param i32 i32 i32) (result i32)))

  (memory (export "memory") 2)

  ;; ---- static data (offset: bytes) ----
  (data (i32.const 1024) "{\"id\":\"hello\",\"display_name\":\"Hello Auth\",\"description\":\"Auth-only example provider\",\"requires_auth\":true,\"provider\":\"openai\"}")  ;; 126
  (data (i32.const 1152) "token")                           ;; 5
  (data (i32.const 1168) "HELLO_TOKEN")                     ;; 11
  (data (i32.const 1184) "{\"error\":\"not authenticated: call init_with_credentials or set HELLO_TOKEN\"}")  ;; 76
  (data (i32.const 1280) "{\"access_token\":\"")           ;; 17
  (data (i32.const 1312) "\",\"project_id\":null,\"api_mode\":\"openai_compat\",\"endpoint\":\"")  ;; 59
  (data (i32.const 1376) "https://api.example.com/v1/chat/completions")  ;; 43
  (data (i32.const 1440) "Hello Auth")                      ;; 10
  (data (i32.const 1472) "\",\"custom_headers\":{\"X-Hello\":\"1\"}}")  ;; 35
  (data (i32.const 1520) "HELLO_ENDPOINT")                  ;; 14
  ;; scratch: 4096.. the token, 32768.. the endpoint (room up to the heap at 65536)

  ;; ---- allocator: bump allocation above 64 KiB; dealloc returns the newest block (hosts free LIFO) ----
  (global $heap (mut i32) (i32.const 65536))
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (block $fits
      (loop $grow
        (br_if $fits (i32.le_u (local.get $end) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 0))))
        (br $grow)))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "dealloc") (param $p i32) (param $n i32)
    (if (i32.eq (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8))
                (global.get $heap))
      (then (global.set $heap (local.get $p)))))

  (func $emit (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; the token at 4096: stored credentials first, then the environment; returns its length (<= 0: none)
  (func $token (result i32)
    (local $n i32)
    (local.set $n (call $storage_get (i32.const 1152) (i32.const 5) (i32.const 4096)))
    (if (i32.gt_s (local.get $n) (i32.const 0)) (then (return (local.get $n))))
    (call $env_get (i32.const 1168) (i32.const 11) (i32.const 4096)))

  ;; ---- provider exports ----
  (func (export "provider_info") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1024) (i32.const 126)))
    (i32.const 126))

  (func (export "provider_auth_credentials") (param $ret i32) (result i32)
    (local $n i32) (local $out i32)
    (local.set $n (call $token))
    (if (i32.le_s (local.get $n) (i32.const 0))
      (then
        (drop (call $emit (local.get $ret) (i32.const 1184) (i32.const 76)))
        (return (i32.const -76))))
    (local.set $out (call $emit (local.get $ret) (i32.const 1280) (i32.const 17)))
    (local.set $out (call $emit (local.get $out) (i32.const 4096) (local.get $n)))
    (local.set $out (call $emit (local.get $out) (i32.const 1312) (i32.const 59)))
    (local.set $n (call $env_get (i32.const 1520) (i32.const 14) (i32.const 32768)))
    (if (i32.gt_s (local.get $n) (i32.const 0))
      (then (local.set $out (call $emit (local.get $out) (i32.const 32768) (local.get $n))))
      (else (local.set $out (call $emit (local.get $out) (i32.const 1376) (i32.const 43)))))
    (local.set $out (call $emit (local.get $out) (i32.const 1472) (i32.const 35)))
    (i32.sub (local.get $out) (local.get $ret)))

  ;; ---- legacy auth exports (ABI §3.2) ----
  (func (export "display_name") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1440) (i32.const 10)))
    (i32.const 10))

  (func (export "status") (result i32)   ;; 0 not authenticated, 1 authenticated
    (i32.gt_s (call $storage_get (i32.const 1152) (i32.const 5) (i32.const 4096)) (i32.const 0)))

  (func (export "get_token") (param $ret i32) (result i32)
    (local $n i32)
    (local.set $n (call $token))
    (if (i32.le_s (local.get $n) (i32.const 0)) (then (return (i32.const -1))))
    (drop (call $emit (local.get $ret) (i32.const 4096) (local.get $n)))
    (local.get $n))

  (func (export "init_with_credentials") (param $p i32) (param $n i32) (result i32)
    (call $storage_set (i32.const 1152) (i32.const 5) (local.get $p) (local.get $n)))

  (func (export "logout") (result i32)
    (call $storage_delete (i32.const 1152) (i32.const 5)))
)
