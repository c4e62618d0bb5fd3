;; device-auth: a tark `type = "auth"` plugin with tark's legacy auth exports (tark-core-abi.md §3.2), in WAT.
;;
;;   init_with_credentials(ptr, len) -> 0   keeps the credentials JSON `tark auth` hands over (tark:storage)
;;   status() -> 0 not authenticated, 1 authenticated
;;   get_token(ret) -> len                  the "access_token" string of the kept credentials (-1 if none)
;;   display_name(ret) -> len, logout() -> 0 (forgets the credentials)
;; The JSON reader is a toy: it finds "access_token", then the string after the colon, and copies it as written.
(module
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:storage" "delete" (func $storage_delete (param i32 i32) (result i32)))
  (import "tark:log" "info" (func $log_info (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 1024) "Device Auth")                     ;; 11
  (data (i32.const 1040) "credentials")                     ;; 11
  (data (i32.const 1056) "\"access_token\"")                ;; 14
  (data (i32.const 1072) "device-auth: credentials kept")   ;; 29
  ;; scratch: 4096.. the kept credentials (up to the heap at 65536)

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

  ;; first position of the n bytes at needle in [p, end), or -1
  (func $find (param $p i32) (param $end i32) (param $needle i32) (param $n i32) (result i32)
    (local $i i32)
    (block $none
      (loop $scan
        (br_if $none (i32.gt_u (i32.add (local.get $p) (local.get $n)) (local.get $end)))
        (local.set $i (i32.const 0))
        (block $differ
          (loop $cmp
            (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (local.get $p))))
            (br_if $differ (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                                   (i32.load8_u (i32.add (local.get $needle) (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $cmp)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  ;; next position at or after p holding byte c, or -1
  (func $next_byte (param $p i32) (param $end i32) (param $c i32) (result i32)
    (block $none
      (loop $scan
        (br_if $none (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $p)) (local.get $c)) (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  (func (export "display_name") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 1024) (i32.const 11))
    (i32.const 11))

  (func (export "init_with_credentials") (param $p i32) (param $n i32) (result i32)
    (if (i32.lt_s (call $storage_set (i32.const 1040) (i32.const 11) (local.get $p) (local.get $n)) (i32.const 0))
      (then (return (i32.const -1))))
    (call $log_info (i32.const 1072) (i32.const 29))
    (i32.const 0))

  (func (export "status") (result i32)
    (i32.gt_s (call $storage_get (i32.const 1040) (i32.const 11) (i32.const 4096)) (i32.const 0)))

  (func (export "get_token") (param $ret i32) (result i32)
    (local $len i32) (local $end i32) (local $key i32) (local $open i32) (local $close i32)
    (local.set $len (call $storage_get (i32.const 1040) (i32.const 11) (i32.const 4096)))
    (if (i32.le_s (local.get $len) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $end (i32.add (i32.const 4096) (local.get $len)))
    (local.set $key (call $find (i32.const 4096) (local.get $end) (i32.const 1056) (i32.const 14)))
    (if (i32.lt_s (local.get $key) (i32.const 0)) (then (return (i32.const -1))))
    ;; the value: after the colon, between the next two quotes
    (local.set $open (call $next_byte (i32.add (local.get $key) (i32.const 14)) (local.get $end) (i32.const 34)))
    (if (i32.lt_s (local.get $open) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $close (call $next_byte (i32.add (local.get $open) (i32.const 1)) (local.get $end) (i32.const 34)))
    (if (i32.lt_s (local.get $close) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $len (i32.sub (local.get $close) (i32.add (local.get $open) (i32.const 1))))
    (memory.copy (local.get $ret) (i32.add (local.get $open) (i32.const 1)) (local.get $len))
    (local.get $len))

  (func (export "logout") (result i32)
    (call $storage_delete (i32.const 1040) (i32.const 11)))
)
