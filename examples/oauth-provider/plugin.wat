;; oauth-provider: a tark core ABI v0.1 provider that signs in with OAuth (`tark auth oauth-demo`).
;;
;;   auth_process_tokens  tark's token JSON -> {"access_token":"<token>","source":"oauth-provider"}, which tark
;;                        stores verbatim as the credentials file
;;   provider_auth_init   gets that file's text after sign-in; keeps it in tark:storage key "credentials"
;;   provider_auth_status 1 authenticated (credentials stored), 2 not authenticated
;;   provider_auth_logout forgets the stored credentials
;;   provider_chat        answers "authenticated as <first 4 characters of the access token>"
;; Limits of this toy JSON reader: the token is copied as it was escaped in the input (a token with escapes
;; could be cut inside one by the 4-character chat answer).
(module
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:storage" "delete" (func $storage_delete (param i32 i32) (result i32)))

  (memory (export "memory") 2)

  ;; ---- static data (offset: bytes) ----
  (data (i32.const 1024) "{\"id\":\"oauth-demo\",\"display_name\":\"OAuth Demo\",\"description\":\"Example provider signed in with OAuth\",\"requires_auth\":true,\"provider\":\"openai\"}")  ;; 142
  (data (i32.const 1280) "[{\"id\":\"oauth-demo-1\",\"display_name\":\"OAuth Demo 1\"}]")  ;; 53
  (data (i32.const 1344) "\"access_token\"")                 ;; 14
  (data (i32.const 1360) "{\"access_token\":\"")              ;; 17
  (data (i32.const 1392) "\",\"source\":\"oauth-provider\"}")  ;; 28
  (data (i32.const 1424) "{\"error\":\"no access_token string in the token response\"}")  ;; 56
  (data (i32.const 1488) "credentials")                       ;; 11
  (data (i32.const 1504) "{\"error\":\"not authenticated: run tark auth oauth-demo\"}")  ;; 55
  (data (i32.const 1568) "{\"text\":\"authenticated as ")     ;; 26
  (data (i32.const 1600) "\",\"usage\":{\"input_tokens\":1,\"output_tokens\":3},\"finish_reason\":\"stop\"}")  ;; 70
  (data (i32.const 1680) "{\"error\":\"credentials have no access_token string\"}")  ;; 51
  ;; scratch: 8192.. the stored credentials (room up to the heap at 65536)

  ;; ---- allocator: bump allocation above 64 KiB; dealloc returns the newest block (hosts free LIFO) ----
  (global $heap (mut i32) (i32.const 65536))
  (global $token_len (mut i32) (i32.const 0))
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

  ;; ---- helpers ----
  (func $emit (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  (func $equal (param $a i32) (param $b i32) (param $n i32) (result i32)
    (local $i i32)
    (block $differ
      (loop $next
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                               (i32.load8_u (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; first position of needle in [p, end), or -1
  (func $find (param $p i32) (param $end i32) (param $needle i32) (param $nlen i32) (result i32)
    (block $none
      (loop $scan
        (br_if $none (i32.gt_u (i32.add (local.get $p) (local.get $nlen)) (local.get $end)))
        (if (call $equal (local.get $p) (local.get $needle) (local.get $nlen)) (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  (func $skip_ws (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.eqz (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 10)))
                                      (i32.or (i32.eq (local.get $c) (i32.const 13)) (i32.eq (local.get $c) (i32.const 9))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; the contents of the string value of "access_token" in [p, end): its start, length in $token_len;
  ;; -1 when there is none (missing, null, not a string, unterminated or empty)
  (func $access_token (param $p i32) (param $end i32) (result i32)
    (local $c i32) (local $start i32)
    (local.set $p (call $find (local.get $p) (local.get $end) (i32.const 1344) (i32.const 14)))
    (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $p (call $skip_ws (i32.add (local.get $p) (i32.const 14)) (local.get $end)))
    (if (i32.or (i32.ge_u (local.get $p) (local.get $end)) (i32.ne (i32.load8_u (local.get $p)) (i32.const 58)))
      (then (return (i32.const -1))))
    (local.set $p (call $skip_ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
    (if (i32.or (i32.ge_u (local.get $p) (local.get $end)) (i32.ne (i32.load8_u (local.get $p)) (i32.const 34)))
      (then (return (i32.const -1))))
    (local.set $start (i32.add (local.get $p) (i32.const 1)))
    (local.set $p (local.get $start))
    (block $none
      (loop $next
        (br_if $none (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.eq (local.get $c) (i32.const 34))
          (then
            (global.set $token_len (i32.sub (local.get $p) (local.get $start)))
            (if (i32.eqz (global.get $token_len)) (then (return (i32.const -1))))
            (return (local.get $start))))
        (local.set $p (i32.add (local.get $p) (select (i32.const 2) (i32.const 1) (i32.eq (local.get $c) (i32.const 92)))))
        (br $next)))
    (i32.const -1))

  ;; the stored credentials at 8192; returns their length (<= 0: none)
  (func $credentials (result i32)
    (call $storage_get (i32.const 1488) (i32.const 11) (i32.const 8192)))

  (func $error (param $ret i32) (param $msg i32) (param $len i32) (result i32)
    (drop (call $emit (local.get $ret) (local.get $msg) (local.get $len)))
    (i32.sub (i32.const 0) (local.get $len)))

  ;; ---- provider exports ----
  (func (export "provider_info") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1024) (i32.const 142)))
    (i32.const 142))

  (func (export "provider_models") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1280) (i32.const 53)))
    (i32.const 53))

  (func (export "auth_process_tokens") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (local $token i32) (local $out i32)
    (local.set $token (call $access_token (local.get $in) (i32.add (local.get $in) (local.get $len))))
    (if (i32.lt_s (local.get $token) (i32.const 0))
      (then (return (call $error (local.get $ret) (i32.const 1424) (i32.const 56)))))
    (if (i32.gt_u (global.get $token_len) (i32.const 8000))
      (then (return (call $error (local.get $ret) (i32.const 1424) (i32.const 56)))))
    (local.set $out (call $emit (local.get $ret) (i32.const 1360) (i32.const 17)))
    (local.set $out (call $emit (local.get $out) (local.get $token) (global.get $token_len)))
    (local.set $out (call $emit (local.get $out) (i32.const 1392) (i32.const 28)))
    (i32.sub (local.get $out) (local.get $ret)))

  (func (export "provider_auth_init") (param $p i32) (param $n i32) (result i32)
    (if (i32.lt_s (call $access_token (local.get $p) (i32.add (local.get $p) (local.get $n))) (i32.const 0))
      (then (return (i32.const -2))))
    (call $storage_set (i32.const 1488) (i32.const 11) (local.get $p) (local.get $n)))

  (func (export "provider_auth_status") (result i32)   ;; 1 ok, 2 not authenticated
    (select (i32.const 1) (i32.const 2) (i32.gt_s (call $credentials) (i32.const 0))))

  (func (export "provider_auth_logout") (result i32)
    (call $storage_delete (i32.const 1488) (i32.const 11)))

  (func (export "provider_chat")
    (param $msgs i32) (param $msgs_len i32) (param $model i32) (param $model_len i32) (param $ret i32) (result i32)
    (local $n i32) (local $token i32) (local $shown i32) (local $out i32)
    (local.set $n (call $credentials))
    (if (i32.le_s (local.get $n) (i32.const 0))
      (then (return (call $error (local.get $ret) (i32.const 1504) (i32.const 55)))))
    (local.set $token (call $access_token (i32.const 8192) (i32.add (i32.const 8192) (local.get $n))))
    (if (i32.lt_s (local.get $token) (i32.const 0))
      (then (return (call $error (local.get $ret) (i32.const 1680) (i32.const 51)))))
    (local.set $shown (select (i32.const 4) (global.get $token_len) (i32.gt_u (global.get $token_len) (i32.const 4))))
    (local.set $out (call $emit (local.get $ret) (i32.const 1568) (i32.const 26)))
    (local.set $out (call $emit (local.get $out) (local.get $token) (local.get $shown)))
    (local.set $out (call $emit (local.get $out) (i32.const 1600) (i32.const 70)))
    (i32.sub (local.get $out) (local.get $ret)))
)
