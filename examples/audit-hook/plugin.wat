;; audit-hook: a hook plugin of our hook ABI (docs/tool-hook-abi.md) written by hand in WAT.
;;
;; Every event appends one line to tark:storage key "events" and logs it (tark:log info, without the newline):
;;   hook_on_tool_execute(tool, args)    "on_tool_execute <tool> <args>"
;;   hook_on_tool_complete(tool, result) "on_tool_complete <tool> <result JSON>"
;;   hook_on_error(error)                "on_error <error JSON>"
;; Each field is cut at 1024 bytes; the oldest lines are dropped to keep "events" within 16 KiB.
;;   audit_events(ret)                   the recorded lines (for `tark plugin call audit-hook audit_events`)
(module
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:log" "info" (func $log_info (param i32 i32)))

  (memory (export "memory") 2)

  ;; ---- static data (offset: bytes) ----
  (data (i32.const 1024) "events")              ;; 6
  (data (i32.const 1040) "on_tool_execute ")    ;; 16
  (data (i32.const 1072) "on_tool_complete ")   ;; 17
  (data (i32.const 1104) "on_error ")           ;; 9
  ;; scratch: 8192.. the line being recorded (< 2100 bytes); 16384.. the events value plus the new line

  (global $events i32 (i32.const 16384))
  (global $events_max i32 (i32.const 16384))
  (global $field_max i32 (i32.const 1024))

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

  ;; ---- helpers ----
  ;; copy len bytes from src to dst; returns dst + len
  (func $emit (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; like $emit, but at most $field_max bytes
  (func $emit_field (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (call $emit (local.get $dst) (local.get $src)
      (select (local.get $len) (global.get $field_max) (i32.lt_u (local.get $len) (global.get $field_max)))))

  ;; log the line [8192, end) and append it with a newline to "events", dropping the oldest lines over 16 KiB
  (func $record (param $end i32) (result i32)
    (local $have i32) (local $start i32) (local $stop i32)
    (call $log_info (i32.const 8192) (i32.sub (local.get $end) (i32.const 8192)))
    (i32.store8 (local.get $end) (i32.const 10))
    (local.set $end (i32.add (local.get $end) (i32.const 1)))
    (local.set $have (call $storage_get (i32.const 1024) (i32.const 6) (global.get $events)))
    (if (i32.or (i32.lt_s (local.get $have) (i32.const 0)) (i32.gt_u (local.get $have) (global.get $events_max)))
      (then (local.set $have (i32.const 0))))
    (local.set $stop (call $emit (i32.add (global.get $events) (local.get $have)) (i32.const 8192)
                                 (i32.sub (local.get $end) (i32.const 8192))))
    (local.set $start (global.get $events))
    (if (i32.gt_u (i32.sub (local.get $stop) (local.get $start)) (global.get $events_max))
      (then
        ;; skip to just after the first newline past the excess
        (local.set $start (i32.sub (local.get $stop) (global.get $events_max)))
        (block $found
          (loop $next
            (br_if $found (i32.ge_u (local.get $start) (local.get $stop)))
            (local.set $start (i32.add (local.get $start) (i32.const 1)))
            (br_if $found (i32.eq (i32.load8_u (i32.sub (local.get $start) (i32.const 1))) (i32.const 10)))
            (br $next)))))
    (call $storage_set (i32.const 1024) (i32.const 6) (local.get $start) (i32.sub (local.get $stop) (local.get $start))))

  ;; ---- exports ----
  (func (export "hook_on_tool_execute") (param $tool i32) (param $tool_len i32) (param $args i32) (param $args_len i32)
    (result i32)
    (local $p i32)
    (local.set $p (call $emit (i32.const 8192) (i32.const 1040) (i32.const 16)))
    (local.set $p (call $emit_field (local.get $p) (local.get $tool) (local.get $tool_len)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $emit_field (i32.add (local.get $p) (i32.const 1)) (local.get $args) (local.get $args_len)))
    (call $record (local.get $p)))

  (func (export "hook_on_tool_complete") (param $tool i32) (param $tool_len i32) (param $result i32) (param $result_len i32)
    (result i32)
    (local $p i32)
    (local.set $p (call $emit (i32.const 8192) (i32.const 1072) (i32.const 17)))
    (local.set $p (call $emit_field (local.get $p) (local.get $tool) (local.get $tool_len)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $emit_field (i32.add (local.get $p) (i32.const 1)) (local.get $result) (local.get $result_len)))
    (call $record (local.get $p)))

  (func (export "hook_on_error") (param $error i32) (param $error_len i32) (result i32)
    (call $record (call $emit_field (call $emit (i32.const 8192) (i32.const 1104) (i32.const 9))
                                    (local.get $error) (local.get $error_len))))

  (func (export "audit_events") (param $ret i32) (result i32)
    (call $storage_get (i32.const 1024) (i32.const 6) (local.get $ret)))
)
