;; echo-provider: a tark core ABI v0.1 provider written by hand in WAT.
;;
;; Exports what tark calls on a provider (ABI §3.1): provider_info, provider_models, provider_chat, plus
;; memory / alloc / dealloc. It imports WASI the way a Rust wasm32-wasip1 build does and three tark:* modules:
;;   provider_chat  echoes the last user message, prefixed with $ECHO_PREFIX (tark:env) if it is set,
;;                  counts chats in tark:storage key "chat_count", logs each one (tark:log) and writes a line to
;;                  stdout (WASI fd_write; the host captures it).
;; Limits of this toy JSON reader: messages are tark's [{"role":..,"content":".."}] with "role" before
;; "content"; the echoed text is copied as it was escaped in the input, so the output stays valid JSON.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:log" "info" (func $log_info (param i32 i32)))
  (import "tark:env" "get" (func $env_get (param i32 i32 i32) (result i32)))

  (memory (export "memory") 2)

  ;; ---- static data (offset: bytes) ----
  (data (i32.const 1024) "{\"id\":\"echo\",\"display_name\":\"Echo\",\"description\":\"Echoes the last user message back\",\"requires_auth\":false,\"provider\":\"openai\"}")  ;; 127
  (data (i32.const 1280) "[{\"id\":\"echo-1\",\"display_name\":\"Echo 1\",\"context_window\":8192,\"supports_streaming\":false,\"supports_tools\":false}]")  ;; 113
  (data (i32.const 1536) "\"role\"")                          ;; 6
  (data (i32.const 1552) "\"content\"")                       ;; 9
  (data (i32.const 1568) "\"user\"")                          ;; 6
  (data (i32.const 1584) "{\"text\":\"")                      ;; 9
  (data (i32.const 1600) "\",\"usage\":{\"input_tokens\":")   ;; 26
  (data (i32.const 1632) ",\"output_tokens\":")               ;; 17
  (data (i32.const 1664) "},\"finish_reason\":\"stop\"}")     ;; 25
  (data (i32.const 1696) "{\"error\":\"no user message in the conversation\"}")  ;; 47
  (data (i32.const 1760) "chat_count")                        ;; 10
  (data (i32.const 1776) "ECHO_PREFIX")                       ;; 11
  (data (i32.const 1792) "echo-provider: answering chat #")   ;; 31
  (data (i32.const 1856) "echo-provider: chat\n")             ;; 20
  ;; scratch: 4096 storage value, 4608 log line, 4800 iovec, 4816 nwritten, 4832 random bytes, 4848 clock,
  ;; 4864 environ sizes, 4880..4896 itoa digits, 8192.. env value (room up to the heap at 65536)

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

  ;; after a key ending at p: the position of the value's opening quote (`: "`), or -1 if it is no string
  (func $value_quote (param $p i32) (param $end i32) (result i32)
    (local.set $p (call $skip_ws (local.get $p) (local.get $end)))
    (if (i32.or (i32.ge_u (local.get $p) (local.get $end)) (i32.ne (i32.load8_u (local.get $p)) (i32.const 58)))
      (then (return (i32.const -1))))
    (local.set $p (call $skip_ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
    (if (i32.or (i32.ge_u (local.get $p) (local.get $end)) (i32.ne (i32.load8_u (local.get $p)) (i32.const 34)))
      (then (return (i32.const -1))))
    (local.get $p))

  ;; position of the closing quote of a string whose contents start at p (backslash escapes skipped), or -1
  (func $string_end (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (block $none
      (loop $next
        (br_if $none (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.eq (local.get $c) (i32.const 34)) (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (select (i32.const 2) (i32.const 1) (i32.eq (local.get $c) (i32.const 92)))))
        (br $next)))
    (i32.const -1))

  ;; decimal digits of n at dst; returns the end
  (func $itoa (param $n i32) (param $dst i32) (result i32)
    (local $tmp i32)
    (local.set $tmp (i32.const 4896))
    (loop $digit
      (local.set $tmp (i32.sub (local.get $tmp) (i32.const 1)))
      (i32.store8 (local.get $tmp) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (call $emit (local.get $dst) (local.get $tmp) (i32.sub (i32.const 4896) (local.get $tmp))))

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

  ;; ---- exports ----
  (func (export "provider_info") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1024) (i32.const 127)))
    (i32.const 127))

  (func (export "provider_models") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1280) (i32.const 113)))
    (i32.const 113))

  (func (export "provider_chat")
    (param $msgs i32) (param $msgs_len i32) (param $model i32) (param $model_len i32) (param $ret i32) (result i32)
    (local $end i32) (local $p i32) (local $q i32) (local $close i32) (local $text i32) (local $text_len i32)
    (local $count i32) (local $prefix_len i32) (local $out i32)
    (local.set $end (i32.add (local.get $msgs) (local.get $msgs_len)))
    (local.set $text (i32.const -1))
    (local.set $p (local.get $msgs))
    ;; remember the content of every message whose role is "user"; the last one wins
    (block $scanned
      (loop $next
        (local.set $p (call $find (local.get $p) (local.get $end) (i32.const 1536) (i32.const 6)))
        (br_if $scanned (i32.lt_s (local.get $p) (i32.const 0)))
        (local.set $p (i32.add (local.get $p) (i32.const 6)))
        (local.set $q (call $value_quote (local.get $p) (local.get $end)))
        (if (i32.and (i32.ge_s (local.get $q) (i32.const 0))
                     (call $equal (local.get $q) (i32.const 1568) (i32.const 6)))
          (then
            (local.set $q (call $find (local.get $q) (local.get $end) (i32.const 1552) (i32.const 9)))
            (if (i32.ge_s (local.get $q) (i32.const 0))
              (then
                (local.set $q (call $value_quote (i32.add (local.get $q) (i32.const 9)) (local.get $end)))
                (if (i32.ge_s (local.get $q) (i32.const 0))
                  (then
                    (local.set $close (call $string_end (i32.add (local.get $q) (i32.const 1)) (local.get $end)))
                    (if (i32.ge_s (local.get $close) (i32.const 0))
                      (then
                        (local.set $text (i32.add (local.get $q) (i32.const 1)))
                        (local.set $text_len (i32.sub (local.get $close) (local.get $text)))))))))))
        (br $next)))
    (if (i32.lt_s (local.get $text) (i32.const 0))
      (then
        ;; like gemini/chatgpt: the error JSON goes into the buffer and the length comes back negated
        (drop (call $emit (local.get $ret) (i32.const 1696) (i32.const 47)))
        (return (i32.const -47))))
    (if (i32.gt_u (local.get $text_len) (i32.const 60000)) (then (local.set $text_len (i32.const 60000))))

    ;; chat_count += 1 in tark:storage (a missing key reads as 0 bytes)
    (local.set $count (call $storage_get (i32.const 1760) (i32.const 10) (i32.const 4096)))
    (local.set $count (i32.add (select (call $atoi (i32.const 4096) (local.get $count)) (i32.const 0)
                                       (i32.gt_s (local.get $count) (i32.const 0))) (i32.const 1)))
    (drop (call $storage_set (i32.const 1760) (i32.const 10) (i32.const 4096)
                             (i32.sub (call $itoa (local.get $count) (i32.const 4096)) (i32.const 4096))))

    ;; "echo-provider: answering chat #N" to tark:log
    (drop (call $emit (i32.const 4608) (i32.const 1792) (i32.const 31)))
    (call $log_info (i32.const 4608)
                    (i32.sub (call $itoa (local.get $count) (i32.const 4639)) (i32.const 4608)))

    ;; a line on stdout, and the WASI calls a Rust std start-up makes
    (i32.store (i32.const 4800) (i32.const 1856))
    (i32.store (i32.const 4804) (i32.const 20))
    (drop (call $fd_write (i32.const 1) (i32.const 4800) (i32.const 1) (i32.const 4816)))
    (drop (call $environ_sizes_get (i32.const 4864) (i32.const 4868)))
    (drop (call $random_get (i32.const 4832) (i32.const 8)))
    (drop (call $clock_time_get (i32.const 0) (i64.const 1000) (i32.const 4848)))

    ;; optional prefix from the environment (-2 denied, 0 unset)
    (local.set $prefix_len (call $env_get (i32.const 1776) (i32.const 11) (i32.const 8192)))

    ;; {"text":"<prefix><text>","usage":{"input_tokens":N,"output_tokens":M},"finish_reason":"stop"}
    (local.set $out (call $emit (local.get $ret) (i32.const 1584) (i32.const 9)))
    (if (i32.gt_s (local.get $prefix_len) (i32.const 0))
      (then (local.set $out (call $emit (local.get $out) (i32.const 8192) (local.get $prefix_len)))))
    (local.set $out (call $emit (local.get $out) (local.get $text) (local.get $text_len)))
    (local.set $out (call $emit (local.get $out) (i32.const 1600) (i32.const 26)))
    (local.set $out (call $itoa (i32.add (i32.div_u (local.get $msgs_len) (i32.const 4)) (i32.const 1)) (local.get $out)))
    (local.set $out (call $emit (local.get $out) (i32.const 1632) (i32.const 17)))
    (local.set $out (call $itoa (i32.add (i32.div_u (local.get $text_len) (i32.const 4)) (i32.const 1)) (local.get $out)))
    (local.set $out (call $emit (local.get $out) (i32.const 1664) (i32.const 25)))
    (i32.sub (local.get $out) (local.get $ret)))
)
