;; world: tool-world
;; words-wit: examples/word-tools as a component of wit/tark.wit's tool-world, written as the core module a
;; component embeds (canonical ABI by hand; examples/build.py wraps it with `wasm-tools component`). Same tools,
;; same answers: word_count, store_note (storage key "note"), read_note.
(module
  (import "tark:plugin/storage@0.1.0" "get" (func $storage_get (param i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "word_count")  ;; 10
  (data (i32.const 1040) "Counts the words of text (runs of characters between spaces)")  ;; 60
  (data (i32.const 1104) "{\22type\22:\22object\22,\22properties\22:{\22text\22:{\22type\22:\22string\22}},\22required\22:[\22text\22],\22additionalProperties\22:false}")  ;; 106
  (data (i32.const 1216) "store_note")  ;; 10
  (data (i32.const 1232) "Keeps a note in the plugin's storage, replacing the previous one")  ;; 64
  (data (i32.const 1296) "{\22type\22:\22object\22,\22properties\22:{\22note\22:{\22type\22:\22string\22,\22maxLength\22:1024}},\22required\22:[\22note\22],\22additionalProperties\22:false}")  ;; 123
  (data (i32.const 1424) "read_note")  ;; 9
  (data (i32.const 1440) "Returns the note kept by store_note")  ;; 35
  (data (i32.const 1488) "{\22type\22:\22object\22,\22properties\22:{},\22additionalProperties\22:false}")  ;; 62
  (data (i32.const 1552) "\22text\22:\22")  ;; 8
  (data (i32.const 1568) "\22note\22:\22")  ;; 8
  (data (i32.const 1584) "note")  ;; 4
  (data (i32.const 1600) "note saved")  ;; 10
  (data (i32.const 1616) "no note has been stored yet")  ;; 27
  (data (i32.const 1648) "unknown tool: ")  ;; 14
  (data (i32.const 1664) "arguments need a string value")  ;; 29
  (data (i32.const 3072) "\00\04\00\00\0a\00\00\00\10\04\00\00\3c\00\00\00\50\04\00\00\6a\00\00\00\c0\04\00\00\0a\00\00\00\d0\04\00\00\40\00\00\00\10\05\00\00\7b\00\00\00\90\05\00\00\09\00\00\00\a0\05\00\00\23\00\00\00\d0\05\00\00\3e\00\00\00")  ;; 3 tool-def records
  ;; scratch: 2048 return area (24 bytes), 2080 import return area, 2112.. digits, 4096.. error text

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
  (func $is (param $p i32) (param $len i32) (param $q i32) (param $qlen i32) (result i32)
    (if (result i32) (i32.eq (local.get $len) (local.get $qlen))
      (then (call $equal (local.get $p) (local.get $q) (local.get $len))) (else (i32.const 0))))
  ;; the first position of needle in [p, end), or -1
  (func $find (param $p i32) (param $end i32) (param $needle i32) (param $nlen i32) (result i32)
    (block $none
      (loop $scan
        (br_if $none (i32.gt_u (i32.add (local.get $p) (local.get $nlen)) (local.get $end)))
        (if (call $equal (local.get $p) (local.get $needle) (local.get $nlen)) (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const -1))
  ;; the closing quote of a JSON string whose contents start at p (escapes skipped), or end
  (func $string_end (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.eq (local.get $c) (i32.const 34)))
        (local.set $p (i32.add (local.get $p) (select (i32.const 2) (i32.const 1) (i32.eq (local.get $c) (i32.const 92)))))
        (br $next)))
    (select (local.get $end) (local.get $p) (i32.gt_u (local.get $p) (local.get $end))))
  (func $itoa (param $n i32) (result i32)  ;; digits end at 2160; returns their start
    (local $p i32)
    (local.set $p (i32.const 2160))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (local.get $p))

  ;; tool-result at 2048: { success @0, output @4/@8, error: option<string> @12/@16/@20 }
  (func $ok (param $p i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 2048) (i32.const 1))
    (i32.store (i32.const 2052) (local.get $p))
    (i32.store (i32.const 2056) (local.get $len))
    (i32.store8 (i32.const 2060) (i32.const 0))
    (i32.const 2048))
  (func $fail (param $p i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (i32.const 0))
    (i32.store (i32.const 2056) (i32.const 0))
    (i32.store8 (i32.const 2060) (i32.const 1))
    (i32.store (i32.const 2064) (local.get $p))
    (i32.store (i32.const 2068) (local.get $len))
    (i32.const 2048))
  ;; the value of the string field whose `"key":"` prefix is at key: (start, end) stored at 2176/2180, or 0
  (func $field (param $args i32) (param $end i32) (param $key i32) (param $klen i32) (result i32)
    (local $p i32)
    (local.set $p (call $find (local.get $args) (local.get $end) (local.get $key) (local.get $klen)))
    (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $p (i32.add (local.get $p) (local.get $klen)))
    (i32.store (i32.const 2176) (local.get $p))
    (i32.store (i32.const 2180) (call $string_end (local.get $p) (local.get $end)))
    (i32.const 1))

  (func (export "tark:plugin/tool-plugin@0.1.0#get-tools") (result i32)
    (i32.store (i32.const 2048) (i32.const 3072))
    (i32.store (i32.const 2052) (i32.const 3))
    (i32.const 2048))

  (func (export "tark:plugin/tool-plugin@0.1.0#get-risk-level") (param $name i32) (param $len i32) (result i32)
    (if (call $is (local.get $name) (local.get $len) (i32.const 1216) (i32.const 10))
      (then (return (i32.const 1))))  ;; store_note: write
    (if (i32.or (call $is (local.get $name) (local.get $len) (i32.const 1024) (i32.const 10))
                (call $is (local.get $name) (local.get $len) (i32.const 1424) (i32.const 9)))
      (then (return (i32.const 0))))  ;; read-only
    (i32.const 2))  ;; risky: a name this plugin does not know

  (func (export "tark:plugin/tool-plugin@0.1.0#execute") (param $name i32) (param $len i32) (param $args i32) (param $alen i32) (result i32)
    (local $end i32) (local $p i32) (local $stop i32) (local $words i32) (local $in i32) (local $ch i32) (local $out i32)
    (local.set $end (i32.add (local.get $args) (local.get $alen)))
    (if (call $is (local.get $name) (local.get $len) (i32.const 1024) (i32.const 10))
      (then
        (if (i32.eqz (call $field (local.get $args) (local.get $end) (i32.const 1552) (i32.const 8)))
          (then (return (call $fail (i32.const 1664) (i32.const 29)))))
        (local.set $p (i32.load (i32.const 2176)))
        (local.set $stop (i32.load (i32.const 2180)))
        (block $counted
          (loop $next
            (br_if $counted (i32.ge_u (local.get $p) (local.get $stop)))
            (local.set $ch (i32.load8_u (local.get $p)))
            (if (i32.eq (local.get $ch) (i32.const 32))
              (then (local.set $in (i32.const 0)))
              (else (if (i32.eqz (local.get $in))
                      (then (local.set $words (i32.add (local.get $words) (i32.const 1))) (local.set $in (i32.const 1))))))
            (local.set $p (i32.add (local.get $p) (select (i32.const 2) (i32.const 1) (i32.eq (local.get $ch) (i32.const 92)))))
            (br $next)))
        (local.set $p (call $itoa (local.get $words)))
        (return (call $ok (local.get $p) (i32.sub (i32.const 2160) (local.get $p))))))
    (if (call $is (local.get $name) (local.get $len) (i32.const 1216) (i32.const 10))
      (then
        (if (i32.eqz (call $field (local.get $args) (local.get $end) (i32.const 1568) (i32.const 8)))
          (then (return (call $fail (i32.const 1664) (i32.const 29)))))
        (call $storage_set (i32.const 1584) (i32.const 4) (i32.load (i32.const 2176))
                           (i32.sub (i32.load (i32.const 2180)) (i32.load (i32.const 2176))) (i32.const 2080))
        (return (call $ok (i32.const 1600) (i32.const 10)))))
    (if (call $is (local.get $name) (local.get $len) (i32.const 1424) (i32.const 9))
      (then
        (call $storage_get (i32.const 1584) (i32.const 4) (i32.const 2080))
        (if (i32.eqz (i32.load8_u (i32.const 2080)))
          (then (return (call $fail (i32.const 1616) (i32.const 27)))))
        (return (call $ok (i32.load (i32.const 2084)) (i32.load (i32.const 2088))))))
    ;; "unknown tool: <name>"
    (local.set $out (call $alloc (i32.add (local.get $len) (i32.const 14))))
    (memory.copy (local.get $out) (i32.const 1648) (i32.const 14))
    (memory.copy (i32.add (local.get $out) (i32.const 14)) (local.get $name) (local.get $len))
    (call $fail (local.get $out) (i32.add (local.get $len) (i32.const 14))))
)
