;; word-tools: a tool plugin of our tool ABI (docs/tool-hook-abi.md) written by hand in WAT.
;;
;;   tool_get_tools       three tools, each with a JSON Schema for its arguments
;;   tool_get_risk_level  word_count, read_note: 0 (read-only); store_note: 1 (write); other names: -1
;;   tool_execute         word_count {"text": s}  -> the number of words of s (runs of characters between spaces)
;;                        store_note {"note": s}  -> keeps s (at most 4096 bytes) in tark:storage key "note"
;;                        read_note  {}           -> the kept note; fails with "no note has been stored yet"
;;                        other names             -> {"success":false,...,"error":"unknown tool: <name>"}
;; The host passes the arguments as compact JSON checked against the tool's schema, so `{"text":"` starts the
;; only value; strings stay escaped as in the JSON (an escape such as \n counts as a word character), which lets
;; a stored note be put back into a JSON string as it is.
(module
  (import "tark:storage" "get" (func $storage_get (param i32 i32 i32) (result i32)))
  (import "tark:storage" "set" (func $storage_set (param i32 i32 i32 i32) (result i32)))
  (import "tark:log" "info" (func $log_info (param i32 i32)))

  (memory (export "memory") 2)

  ;; ---- static data: NUL-terminated strings, copied with $emit_z ----
  (data (i32.const 1024)
    "[{\"name\":\"word_count\",\"description\":\"Counts the words of text (runs of characters between spaces)\","
    "\"parameters_schema\":{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"}},"
    "\"required\":[\"text\"],\"additionalProperties\":false}},"
    "{\"name\":\"store_note\",\"description\":\"Keeps a note in the plugin's storage, replacing the previous one\","
    "\"parameters_schema\":{\"type\":\"object\",\"properties\":{\"note\":{\"type\":\"string\",\"maxLength\":1024}},"
    "\"required\":[\"note\"],\"additionalProperties\":false}},"
    "{\"name\":\"read_note\",\"description\":\"Returns the note kept by store_note\","
    "\"parameters_schema\":{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}}]\00")
  (data (i32.const 2048) "word_count\00")
  (data (i32.const 2064) "store_note\00")
  (data (i32.const 2080) "read_note\00")
  (data (i32.const 2096) "\"text\":\"\00")
  (data (i32.const 2112) "\"note\":\"\00")
  (data (i32.const 2128) "note\00")
  (data (i32.const 2144) "{\"success\":true,\"output\":\"\00")
  (data (i32.const 2176) "\",\"error\":null}\00")
  (data (i32.const 2208) "{\"success\":false,\"output\":\"\",\"error\":\"\00")
  (data (i32.const 2256) "\"}\00")
  (data (i32.const 2272) "unknown tool: \00")
  (data (i32.const 2288) "arguments need a string value\00")
  (data (i32.const 2320) "note saved\00")
  (data (i32.const 2336) "no note has been stored yet\00")
  (data (i32.const 2368) "the note is longer than 4096 bytes\00")
  (data (i32.const 2416) "word-tools: running \00")
  ;; scratch: 4096 log line, 4864..4880 itoa digits, 8192.. the note read from storage (4096 bytes at most)

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
  (func $strlen (param $s i32) (result i32)
    (local $p i32)
    (local.set $p (local.get $s))
    (loop $next
      (if (i32.load8_u (local.get $p))
        (then (local.set $p (i32.add (local.get $p) (i32.const 1))) (br $next))))
    (i32.sub (local.get $p) (local.get $s)))

  ;; copy len bytes from src to dst; returns dst + len
  (func $emit (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; copy the NUL-terminated string at src (without its NUL); returns the end
  (func $emit_z (param $dst i32) (param $src i32) (result i32)
    (call $emit (local.get $dst) (local.get $src) (call $strlen (local.get $src))))

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

  ;; is the string (p, len) equal to the NUL-terminated string z?
  (func $is (param $p i32) (param $len i32) (param $z i32) (result i32)
    (if (i32.ne (local.get $len) (call $strlen (local.get $z))) (then (return (i32.const 0))))
    (call $equal (local.get $p) (local.get $z) (local.get $len)))

  ;; first position of the NUL-terminated needle in [p, end), or -1
  (func $find (param $p i32) (param $end i32) (param $needle i32) (result i32)
    (local $nlen i32)
    (local.set $nlen (call $strlen (local.get $needle)))
    (block $none
      (loop $scan
        (br_if $none (i32.gt_u (i32.add (local.get $p) (local.get $nlen)) (local.get $end)))
        (if (call $equal (local.get $p) (local.get $needle) (local.get $nlen)) (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

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

  ;; the contents of the string value that follows key (NUL-terminated, e.g. `"text":"`) in [p, end):
  ;; its start, with its end stored at 4860; -1 if there is none
  (func $string_value (param $p i32) (param $end i32) (param $key i32) (result i32)
    (local $start i32) (local $close i32)
    (local.set $start (call $find (local.get $p) (local.get $end) (local.get $key)))
    (if (i32.lt_s (local.get $start) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $start (i32.add (local.get $start) (call $strlen (local.get $key))))
    (local.set $close (call $string_end (local.get $start) (local.get $end)))
    (if (i32.lt_s (local.get $close) (i32.const 0)) (then (return (i32.const -1))))
    (i32.store (i32.const 4860) (local.get $close))
    (local.get $start))

  ;; decimal digits of n at dst; returns the end
  (func $itoa (param $n i32) (param $dst i32) (result i32)
    (local $tmp i32)
    (local.set $tmp (i32.const 4880))
    (loop $digit
      (local.set $tmp (i32.sub (local.get $tmp) (i32.const 1)))
      (i32.store8 (local.get $tmp) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (call $emit (local.get $dst) (local.get $tmp) (i32.sub (i32.const 4880) (local.get $tmp))))

  ;; {"success":true,"output":"<output>","error":null} at ret; returns its length
  (func $succeed (param $ret i32) (param $out i32) (param $out_len i32) (result i32)
    (local $p i32)
    (local.set $p (call $emit_z (local.get $ret) (i32.const 2144)))
    (local.set $p (call $emit (local.get $p) (local.get $out) (local.get $out_len)))
    (local.set $p (call $emit_z (local.get $p) (i32.const 2176)))
    (i32.sub (local.get $p) (local.get $ret)))

  ;; {"success":false,"output":"","error":"<prefix z><detail>"} at ret; returns its length
  (func $fail (param $ret i32) (param $prefix i32) (param $detail i32) (param $detail_len i32) (result i32)
    (local $p i32)
    (local.set $p (call $emit_z (local.get $ret) (i32.const 2208)))
    (local.set $p (call $emit_z (local.get $p) (local.get $prefix)))
    (local.set $p (call $emit (local.get $p) (local.get $detail) (local.get $detail_len)))
    (local.set $p (call $emit_z (local.get $p) (i32.const 2256)))
    (i32.sub (local.get $p) (local.get $ret)))

  (func $words (param $p i32) (param $end i32) (result i32)
    (local $count i32) (local $in_word i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 32))
          (then (local.set $in_word (i32.const 0)))
          (else
            (if (i32.eqz (local.get $in_word))
              (then (local.set $count (i32.add (local.get $count) (i32.const 1)))))
            (local.set $in_word (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $count))

  ;; ---- exports ----
  (func (export "tool_get_tools") (param $ret i32) (result i32)
    (i32.sub (call $emit_z (local.get $ret) (i32.const 1024)) (local.get $ret)))

  (func (export "tool_get_risk_level") (param $name i32) (param $len i32) (result i32)
    (if (call $is (local.get $name) (local.get $len) (i32.const 2048)) (then (return (i32.const 0))))
    (if (call $is (local.get $name) (local.get $len) (i32.const 2080)) (then (return (i32.const 0))))
    (if (call $is (local.get $name) (local.get $len) (i32.const 2064)) (then (return (i32.const 1))))
    (i32.const -1))

  (func (export "tool_execute")
    (param $name i32) (param $name_len i32) (param $args i32) (param $args_len i32) (param $ret i32) (result i32)
    (local $end i32) (local $start i32) (local $close i32) (local $n i32) (local $digits i32)
    (local.set $end (i32.add (local.get $args) (local.get $args_len)))
    ;; "word-tools: running <name>" to tark:log (names longer than 256 bytes are cut)
    (local.set $n (select (local.get $name_len) (i32.const 256) (i32.lt_u (local.get $name_len) (i32.const 256))))
    (call $log_info (i32.const 4096)
      (i32.sub (call $emit (call $emit_z (i32.const 4096) (i32.const 2416)) (local.get $name) (local.get $n))
               (i32.const 4096)))

    (if (call $is (local.get $name) (local.get $name_len) (i32.const 2048))
      (then
        (local.set $start (call $string_value (local.get $args) (local.get $end) (i32.const 2096)))
        (if (i32.lt_s (local.get $start) (i32.const 0))
          (then (return (call $fail (local.get $ret) (i32.const 2288) (i32.const 0) (i32.const 0)))))
        (local.set $digits (i32.const 4800))
        (local.set $n (i32.sub (call $itoa (call $words (local.get $start) (i32.load (i32.const 4860))) (local.get $digits))
                               (local.get $digits)))
        (return (call $succeed (local.get $ret) (local.get $digits) (local.get $n)))))

    (if (call $is (local.get $name) (local.get $name_len) (i32.const 2064))
      (then
        (local.set $start (call $string_value (local.get $args) (local.get $end) (i32.const 2112)))
        (if (i32.lt_s (local.get $start) (i32.const 0))
          (then (return (call $fail (local.get $ret) (i32.const 2288) (i32.const 0) (i32.const 0)))))
        (local.set $close (i32.load (i32.const 4860)))
        (if (i32.gt_u (i32.sub (local.get $close) (local.get $start)) (i32.const 4096))
          (then (return (call $fail (local.get $ret) (i32.const 2368) (i32.const 0) (i32.const 0)))))
        (drop (call $storage_set (i32.const 2128) (i32.const 4) (local.get $start)
                                 (i32.sub (local.get $close) (local.get $start))))
        (return (call $succeed (local.get $ret) (i32.const 2320) (call $strlen (i32.const 2320))))))

    (if (call $is (local.get $name) (local.get $name_len) (i32.const 2080))
      (then
        (local.set $n (call $storage_get (i32.const 2128) (i32.const 4) (i32.const 8192)))
        (if (i32.le_s (local.get $n) (i32.const 0))
          (then (return (call $fail (local.get $ret) (i32.const 2336) (i32.const 0) (i32.const 0)))))
        (return (call $succeed (local.get $ret) (i32.const 8192) (local.get $n)))))

    (local.set $n (select (local.get $name_len) (i32.const 256) (i32.lt_u (local.get $name_len) (i32.const 256))))
    (call $fail (local.get $ret) (i32.const 2272) (local.get $name) (local.get $n)))
)
