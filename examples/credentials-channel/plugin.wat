;; credentials-channel: a tark core ABI v0.1 channel that REQUIRES its credentials (ABI §3.3).
;;
;;   channel_auth_init  keeps the credentials text if it holds a non-empty "api_key" (what
;;                      `tark plugin auth credentials-channel` writes: {"config":{"api_key":"..","workspace":".."}});
;;                      -1 without one, -2 over 4000 bytes
;;   channel_start      -1 until channel_auth_init accepted credentials, else logs and returns 0
;;   channel_poll       once after start: one inbound message whose text is the credentials it got, hex-encoded
;;   channel_send       -1 without credentials, else success with message_id = the credentials, hex-encoded
;; Handing the credentials back (hex, so they need no JSON escaping) lets a test check byte for byte what the
;; plugin received. A real channel would send them to its service instead.
(module
  (import "tark:log" "info" (func $log_info (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 1024) "{\"id\":\"credentials\",\"display_name\":\"Credentials channel\",\"description\":\"Needs its settings from tark plugin auth\",\"supports_streaming\":false,\"supports_edits\":false}")  ;; 164
  (data (i32.const 1200) "\"api_key\":\"")                                   ;; 11
  (data (i32.const 1216) "credentials-channel: started with its credentials")  ;; 49
  (data (i32.const 1280) "[{\"conversation_id\":\"credentials\",\"user_id\":\"credentials-channel\",\"text\":\"")  ;; 74
  (data (i32.const 1360) "\",\"metadata_json\":\"\"}]")                      ;; 22
  (data (i32.const 1392) "{\"success\":true,\"message_id\":\"")              ;; 30
  (data (i32.const 1424) "\",\"error\":null}")                               ;; 15
  (data (i32.const 1440) "0123456789abcdef")                                 ;; 16
  ;; 16384..20384: the credentials kept by channel_auth_init

  (global $cred_len (mut i32) (i32.const 0))
  (global $reported (mut i32) (i32.const 0))

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

  ;; the n bytes at src as lowercase hex at dst; returns the end
  (func $hex (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (local $i i32) (local $b i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $b (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (i32.store8 (local.get $dst) (i32.load8_u (i32.add (i32.const 1440) (i32.shr_u (local.get $b) (i32.const 4)))))
        (i32.store8 (i32.add (local.get $dst) (i32.const 1))
                    (i32.load8_u (i32.add (i32.const 1440) (i32.and (local.get $b) (i32.const 15)))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 2)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $dst))

  ;; ---- exports ----
  (func (export "channel_info") (param $ret i32) (result i32)
    (drop (call $emit (local.get $ret) (i32.const 1024) (i32.const 164)))
    (i32.const 164))

  (func (export "channel_auth_init") (param $p i32) (param $len i32) (result i32)
    (local $key i32) (local $end i32)
    (if (i32.gt_u (local.get $len) (i32.const 4000)) (then (return (i32.const -2))))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $key (call $find (local.get $p) (local.get $end) (i32.const 1200) (i32.const 11)))
    (if (i32.lt_s (local.get $key) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $key (i32.add (local.get $key) (i32.const 11)))
    ;; the value must not be empty
    (if (i32.or (i32.ge_u (local.get $key) (local.get $end)) (i32.eq (i32.load8_u (local.get $key)) (i32.const 34)))
      (then (return (i32.const -1))))
    (memory.copy (i32.const 16384) (local.get $p) (local.get $len))
    (global.set $cred_len (local.get $len))
    (i32.const 0))

  (func (export "channel_start") (result i32)
    (if (i32.eqz (global.get $cred_len)) (then (return (i32.const -1))))
    (call $log_info (i32.const 1216) (i32.const 49))
    (global.set $reported (i32.const 0))
    (i32.const 0))

  (func (export "channel_poll") (param $ret i32) (result i32)
    (local $out i32)
    (if (i32.eqz (global.get $cred_len)) (then (return (i32.const -1))))
    (if (global.get $reported)
      (then
        (i32.store16 (local.get $ret) (i32.const 0x5d5b))   ;; "[]"
        (return (i32.const 2))))
    (global.set $reported (i32.const 1))
    (local.set $out (call $emit (local.get $ret) (i32.const 1280) (i32.const 74)))
    (local.set $out (call $hex (local.get $out) (i32.const 16384) (global.get $cred_len)))
    (local.set $out (call $emit (local.get $out) (i32.const 1360) (i32.const 22)))
    (i32.sub (local.get $out) (local.get $ret)))

  (func (export "channel_send") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (local $out i32)
    (if (i32.eqz (global.get $cred_len)) (then (return (i32.const -1))))
    (local.set $out (call $emit (local.get $ret) (i32.const 1392) (i32.const 30)))
    (local.set $out (call $hex (local.get $out) (i32.const 16384) (global.get $cred_len)))
    (local.set $out (call $emit (local.get $out) (i32.const 1424) (i32.const 15)))
    (i32.sub (local.get $out) (local.get $ret)))
)
