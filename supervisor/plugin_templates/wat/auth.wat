;; world: auth-world
;; hello-wit: an auth plugin as a component of wit/tark.wit's auth-world, written as the core module a component
;; embeds (canonical ABI by hand; examples/build.py wraps it with `wasm-tools component`). A pretend device flow:
;;   start-device-flow  ok({device-code: "dev-1", user-code: "ABCD-EFGH", verification-uri, 600, 5})
;;   poll(code)         the first poll stores token "hello-<code>" in storage and answers pending; then success
;;   status             authenticated while storage holds "token", else not-authenticated
;;   get-token          the stored token, else err("not authenticated: run the device flow first")
;;   logout             deletes the token
(module
  (import "tark:plugin/storage@0.1.0" "get" (func $storage_get (param i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "delete" (func $storage_delete (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "Hello Auth")                                        ;; 10
  (data (i32.const 1040) "token")                                             ;; 5
  (data (i32.const 1056) "dev-1")                                             ;; 5
  (data (i32.const 1072) "ABCD-EFGH")                                         ;; 9
  (data (i32.const 1088) "https://example.com/device")                        ;; 26
  (data (i32.const 1120) "not authenticated: run the device flow first")      ;; 44
  (data (i32.const 1168) "hello-")                                            ;; 6
  ;; scratch: 2048 return area, 2080 import return area

  (global $heap (mut i32) (i32.const 65536))
  (func $alloc (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (block $fits
      (loop $grow
        (br_if $fits (i32.le_u (local.get $end) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (call $alloc (local.get $size)))
    (if (local.get $old_size) (then (memory.copy (local.get $p) (local.get $old) (local.get $old_size))))
    (local.get $p))

  ;; 1 if storage holds "token" (its string then at 2084/2088)
  (func $has_token (result i32)
    (call $storage_get (i32.const 1040) (i32.const 5) (i32.const 2080))
    (i32.load8_u (i32.const 2080)))

  (func (export "tark:plugin/auth-plugin@0.1.0#display-name") (result i32)
    (i32.store (i32.const 2048) (i32.const 1024))
    (i32.store (i32.const 2052) (i32.const 10))
    (i32.const 2048))

  (func (export "tark:plugin/auth-plugin@0.1.0#status") (result i32)
    (select (i32.const 0) (i32.const 1) (call $has_token)))  ;; authenticated : not-authenticated

  (func (export "tark:plugin/auth-plugin@0.1.0#start-device-flow") (result i32)
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (i32.const 1056)) (i32.store (i32.const 2056) (i32.const 5))
    (i32.store (i32.const 2060) (i32.const 1072)) (i32.store (i32.const 2064) (i32.const 9))
    (i32.store (i32.const 2068) (i32.const 1088)) (i32.store (i32.const 2072) (i32.const 26))
    (i32.store (i32.const 2076) (i32.const 600))
    (i32.store (i32.const 2080) (i32.const 5))
    (i32.const 2048))

  (func (export "tark:plugin/auth-plugin@0.1.0#poll") (param $code i32) (param $len i32) (result i32)
    (local $token i32)
    (if (call $has_token)
      (then (i32.store8 (i32.const 2048) (i32.const 0)) (return (i32.const 2048))))  ;; success
    (local.set $token (call $alloc (i32.add (local.get $len) (i32.const 6))))
    (memory.copy (local.get $token) (i32.const 1168) (i32.const 6))
    (memory.copy (i32.add (local.get $token) (i32.const 6)) (local.get $code) (local.get $len))
    (call $storage_set (i32.const 1040) (i32.const 5) (local.get $token) (i32.add (local.get $len) (i32.const 6))
                       (i32.const 2080))
    (i32.store8 (i32.const 2048) (i32.const 1))  ;; pending
    (i32.const 2048))

  (func (export "tark:plugin/auth-plugin@0.1.0#get-token") (result i32)
    (if (call $has_token)
      (then
        (i32.store8 (i32.const 2048) (i32.const 0))
        (i32.store (i32.const 2052) (i32.load (i32.const 2084)))
        (i32.store (i32.const 2056) (i32.load (i32.const 2088))))
      (else
        (i32.store8 (i32.const 2048) (i32.const 1))
        (i32.store (i32.const 2052) (i32.const 1120))
        (i32.store (i32.const 2056) (i32.const 44))))
    (i32.const 2048))

  (func (export "tark:plugin/auth-plugin@0.1.0#logout") (result i32)
    (call $storage_delete (i32.const 1040) (i32.const 5) (i32.const 2080))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
)
