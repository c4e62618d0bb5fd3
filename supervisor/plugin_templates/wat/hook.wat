;; world: hook-world
;; audit-wit: examples/audit-hook as a component of wit/tark.wit's hook-world, written as the core module a component
;; embeds (canonical ABI by hand; examples/build.py wraps it with `wasm-tools component`). Every event appends one
;; line (and a newline) to storage key "events" and logs it:
;;   on-tool-execute(tool, args)    "on_tool_execute <tool> <args>"
;;   on-tool-complete(tool, result) "on_tool_complete <tool> <result>"
;;   on-error(error)                "on_error <error>"
(module
  (import "tark:plugin/storage@0.1.0" "get" (func $storage_get (param i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (import "tark:plugin/log@0.1.0" "info" (func $log_info (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "events")              ;; 6
  (data (i32.const 1040) "on_tool_execute ")    ;; 16
  (data (i32.const 1072) "on_tool_complete ")   ;; 17
  (data (i32.const 1104) "on_error ")           ;; 9
  ;; scratch: 2080 import return area

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

  ;; copy len bytes from src to dst; returns dst + len
  (func $emit (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; events += prefix a [" " b] "\n"; logs the line
  (func $record (param $prefix i32) (param $plen i32) (param $a i32) (param $alen i32)
                (param $b i32) (param $blen i32) (param $two i32)
    (local $old i32) (local $old_len i32) (local $start i32) (local $line i32) (local $end i32)
    (call $storage_get (i32.const 1024) (i32.const 6) (i32.const 2080))
    (if (i32.load8_u (i32.const 2080))
      (then (local.set $old (i32.load (i32.const 2084))) (local.set $old_len (i32.load (i32.const 2088)))))
    (local.set $start (call $alloc (i32.add (i32.add (local.get $old_len) (local.get $plen))
                                            (i32.add (i32.add (local.get $alen) (local.get $blen)) (i32.const 2)))))
    (local.set $line (call $emit (local.get $start) (local.get $old) (local.get $old_len)))
    (local.set $end (call $emit (local.get $line) (local.get $prefix) (local.get $plen)))
    (local.set $end (call $emit (local.get $end) (local.get $a) (local.get $alen)))
    (if (local.get $two)
      (then (i32.store8 (local.get $end) (i32.const 32))
            (local.set $end (call $emit (i32.add (local.get $end) (i32.const 1)) (local.get $b) (local.get $blen)))))
    (call $log_info (local.get $line) (i32.sub (local.get $end) (local.get $line)))
    (i32.store8 (local.get $end) (i32.const 10))
    (call $storage_set (i32.const 1024) (i32.const 6) (local.get $start)
                       (i32.sub (i32.add (local.get $end) (i32.const 1)) (local.get $start)) (i32.const 2080)))

  (func (export "tark:plugin/hook-plugin@0.1.0#on-tool-execute") (param i32 i32 i32 i32)
    (call $record (i32.const 1040) (i32.const 16) (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 1)))
  (func (export "tark:plugin/hook-plugin@0.1.0#on-tool-complete") (param i32 i32 i32 i32)
    (call $record (i32.const 1072) (i32.const 17) (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 1)))
  (func (export "tark:plugin/hook-plugin@0.1.0#on-error") (param i32 i32)
    (call $record (i32.const 1104) (i32.const 9) (local.get 0) (local.get 1) (i32.const 0) (i32.const 0) (i32.const 0)))
)
