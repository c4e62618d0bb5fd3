;; world: provider-world
;; echo-wit: examples/echo-provider as a component of wit/tark.wit's provider-world, written as the
;; core module a component embeds (canonical ABI by hand); examples/build.py wraps it with `wasm-tools component`.
;;   chat  echoes the content of the last "user" message, prefixed with $ECHO_PREFIX (tark:plugin/env) if set,
;;         counts chats in storage key "chat_count" and logs each one; no user message -> err(...).
(module
  (import "tark:plugin/storage@0.1.0" "get" (func $storage_get (param i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (import "tark:plugin/env@0.1.0" "get" (func $env_get (param i32 i32 i32)))
  (import "tark:plugin/log@0.1.0" "info" (func $log_info (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "echo")                               ;; 4
  (data (i32.const 1040) "echo-1")                             ;; 6
  (data (i32.const 1056) "user")                               ;; 4
  (data (i32.const 1072) "chat_count")                         ;; 10
  (data (i32.const 1088) "ECHO_PREFIX")                        ;; 11
  (data (i32.const 1104) "echo-provider: answering chat #")    ;; 31
  (data (i32.const 1152) "no user message in the conversation") ;; 35
  ;; scratch: 2048 return area, 2080 import return area, 2112 models list, 4096 log line, 4800..4896 itoa digits

  ;; ---- cabi_realloc: bump allocation above 64 KiB, growing memory as needed; never frees ----
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
  (func $itoa (param $n i32) (param $dst i32) (result i32)
    (local $tmp i32)
    (local.set $tmp (i32.const 4896))
    (loop $digit
      (local.set $tmp (i32.sub (local.get $tmp) (i32.const 1)))
      (i32.store8 (local.get $tmp) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (memory.copy (local.get $dst) (local.get $tmp) (i32.sub (i32.const 4896) (local.get $tmp)))
    (i32.add (local.get $dst) (i32.sub (i32.const 4896) (local.get $tmp))))
  (func $atoi (param $p i32) (param $len i32) (result i32)
    (local $n i32) (local $end i32) (local $digit i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $digit (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $digit) (i32.const 9)))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $digit)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; ---- exports (tark:plugin/provider-plugin@0.1.0) ----
  (func (export "tark:plugin/provider-plugin@0.1.0#name") (result i32)
    (i32.store (i32.const 2048) (i32.const 1024))
    (i32.store (i32.const 2052) (i32.const 4))
    (i32.const 2048))

  (func (export "tark:plugin/provider-plugin@0.1.0#models") (result i32)
    (i32.store (i32.const 2112) (i32.const 1040))
    (i32.store (i32.const 2116) (i32.const 6))
    (i32.store (i32.const 2048) (i32.const 2112))
    (i32.store (i32.const 2052) (i32.const 1))
    (i32.const 2048))

  (func (export "tark:plugin/provider-plugin@0.1.0#chat")
    (param $msgs i32) (param $count i32) (param $model i32) (param $model_len i32) (result i32)
    (local $i i32) (local $m i32) (local $text i32) (local $text_len i32) (local $chats i32)
    (local $prefix i32) (local $prefix_len i32) (local $out i32)
    (local.set $text (i32.const -1))
    ;; the last message whose role is "user"
    (block $scanned
      (loop $next
        (br_if $scanned (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $m (i32.add (local.get $msgs) (i32.shl (local.get $i) (i32.const 4))))
        (if (i32.and (i32.eq (i32.load offset=4 (local.get $m)) (i32.const 4))
                     (call $equal (i32.load (local.get $m)) (i32.const 1056) (i32.const 4)))
          (then
            (local.set $text (i32.load offset=8 (local.get $m)))
            (local.set $text_len (i32.load offset=12 (local.get $m)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.lt_s (local.get $text) (i32.const 0))
      (then
        (i32.store8 (i32.const 2048) (i32.const 1))  ;; err
        (i32.store (i32.const 2052) (i32.const 1152))
        (i32.store (i32.const 2056) (i32.const 35))
        (return (i32.const 2048))))

    ;; chat_count += 1 in storage (none reads as 0)
    (call $storage_get (i32.const 1072) (i32.const 10) (i32.const 2080))
    (local.set $chats (i32.add (i32.const 1)
      (select (call $atoi (i32.load (i32.const 2084)) (i32.load (i32.const 2088))) (i32.const 0)
              (i32.load8_u (i32.const 2080)))))
    (call $storage_set (i32.const 1072) (i32.const 10) (i32.const 4096)
                       (i32.sub (call $itoa (local.get $chats) (i32.const 4096)) (i32.const 4096)) (i32.const 2080))
    (memory.copy (i32.const 4096) (i32.const 1104) (i32.const 31))
    (call $log_info (i32.const 4096) (i32.sub (call $itoa (local.get $chats) (i32.const 4127)) (i32.const 4096)))

    ;; optional prefix from the environment
    (call $env_get (i32.const 1088) (i32.const 11) (i32.const 2080))
    (if (i32.load8_u (i32.const 2080))
      (then (local.set $prefix (i32.load (i32.const 2084)))
            (local.set $prefix_len (i32.load (i32.const 2088)))))

    ;; ok(chat-response { content: prefix + text, model, usage-tokens: text_len / 4 + 1 })
    (local.set $out (call $alloc (i32.add (local.get $prefix_len) (local.get $text_len))))
    (memory.copy (local.get $out) (local.get $prefix) (local.get $prefix_len))
    (memory.copy (i32.add (local.get $out) (local.get $prefix_len)) (local.get $text) (local.get $text_len))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (local.get $out))
    (i32.store (i32.const 2056) (i32.add (local.get $prefix_len) (local.get $text_len)))
    (i32.store (i32.const 2060) (local.get $model))
    (i32.store (i32.const 2064) (local.get $model_len))
    (i32.store (i32.const 2068) (i32.add (i32.div_u (local.get $text_len) (i32.const 4)) (i32.const 1)))
    (i32.const 2048))
)
