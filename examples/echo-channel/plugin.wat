;; echo-channel: a tark core ABI v0.1 channel written by hand in WAT (ABI §3.3).
;;
;;   channel_info            static description
;;   channel_start           records "started" in tark:storage and logs it
;;   channel_handle_webhook  queues the request's body in tark:storage key "pending", answers 200 {"queued":true}
;;   channel_poll            turns a queued body into one inbound message (and clears it), else []
;;   channel_send            answers success with a message id that counts up per instance (a long-lived poll
;;                           instance keeps counting; a fresh instance starts at 1)
;; The body is kept as escaped in the request JSON, so it can be put back into a JSON string as it is.
(module
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:storage" "delete" (func $storage_delete (param i32 i32) (result i32)))
  (import "tark:log" "info" (func $log_info (param i32 i32)))

  (memory (export "memory") 2)

  ;; ---- static data (offset: bytes) ----
  (data (i32.const 1024) "{\"id\":\"echo\",\"display_name\":\"Echo channel\",\"description\":\"Echoes webhook bodies back as inbound messages\",\"supports_streaming\":false,\"supports_edits\":false}")  ;; 156
  (data (i32.const 1200) "\"body\"")                        ;; 6
  (data (i32.const 1216) "pending")                         ;; 7
  (data (i32.const 1232) "started")                         ;; 7
  (data (i32.const 1248) "echo-channel: started")           ;; 21
  (data (i32.const 1280) "{\"status\":200,\"headers\":[[\"Content-Type\",\"application/json\"]],\"body\":\"{\\\"queued\\\":true}\",\"messages\":[]}")  ;; 103
  (data (i32.const 1408) "{\"status\":400,\"headers\":[],\"body\":\"no body\",\"messages\":[]}")  ;; 58
  (data (i32.const 1472) "[{\"conversation_id\":\"webhook\",\"user_id\":\"webhook\",\"text\":\"")  ;; 58
  (data (i32.const 1536) "\",\"metadata_json\":\"\"}]")     ;; 22
  (data (i32.const 1568) "{\"success\":true,\"message_id\":\"")  ;; 30
  (data (i32.const 1600) "\",\"error\":null}")              ;; 15
  (data (i32.const 1616) "1")                               ;; 1
  ;; scratch: 4880..4896 itoa digits, 16384.. the pending body (up to the heap at 65536)

  (global $sent (mut i32) (i32.const 0))

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

  ;; ---- exports ----
  (func (export "channel_info") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1024) (i32.const 156)))
    (i32.const 156))

  (func (export "channel_start") (result i32)
    (call $log_info (i32.const 1248) (i32.const 21))
    (call $storage_set (i32.const 1232) (i32.const 7) (i32.const 1616) (i32.const 1)))

  (func (export "channel_handle_webhook") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (local $end i32) (local $q i32) (local $close i32)
    (local.set $end (i32.add (local.get $in) (local.get $len)))
    (local.set $q (call $find (local.get $in) (local.get $end) (i32.const 1200) (i32.const 6)))
    (if (i32.ge_s (local.get $q) (i32.const 0))
      (then (local.set $q (call $value_quote (i32.add (local.get $q) (i32.const 6)) (local.get $end)))))
    (if (i32.ge_s (local.get $q) (i32.const 0))
      (then (local.set $close (call $string_end (i32.add (local.get $q) (i32.const 1)) (local.get $end))))
      (else (local.set $close (i32.const -1))))
    (if (i32.lt_s (local.get $close) (i32.const 0))
      (then
        (drop (call $emit (local.get $ret) (i32.const 1408) (i32.const 58)))
        (return (i32.const 58))))
    (drop (call $storage_set (i32.const 1216) (i32.const 7) (i32.add (local.get $q) (i32.const 1))
                             (i32.sub (local.get $close) (i32.add (local.get $q) (i32.const 1)))))
    (drop (call $emit (local.get $ret) (i32.const 1280) (i32.const 103)))
    (i32.const 103))

  (func (export "channel_poll") (param $ret i32) (result i32)
    (local $n i32) (local $out i32)
    (local.set $n (call $storage_get (i32.const 1216) (i32.const 7) (i32.const 16384)))
    (if (i32.le_s (local.get $n) (i32.const 0))
      (then
        (i32.store16 (local.get $ret) (i32.const 0x5d5b))   ;; "[]"
        (return (i32.const 2))))
    (if (i32.gt_u (local.get $n) (i32.const 8000)) (then (local.set $n (i32.const 8000))))  ;; CAP is 8192
    (drop (call $storage_delete (i32.const 1216) (i32.const 7)))
    (local.set $out (call $emit (local.get $ret) (i32.const 1472) (i32.const 58)))
    (local.set $out (call $emit (local.get $out) (i32.const 16384) (local.get $n)))
    (local.set $out (call $emit (local.get $out) (i32.const 1536) (i32.const 22)))
    (i32.sub (local.get $out) (local.get $ret)))

  (func (export "channel_send") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (local $out i32)
    (global.set $sent (i32.add (global.get $sent) (i32.const 1)))
    (local.set $out (call $emit (local.get $ret) (i32.const 1568) (i32.const 30)))
    (local.set $out (call $itoa (global.get $sent) (local.get $out)))
    (local.set $out (call $emit (local.get $out) (i32.const 1600) (i32.const 15)))
    (i32.sub (local.get $out) (local.get $ret)))
)
