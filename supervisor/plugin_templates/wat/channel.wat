;; world: channel-world
;; chan-wit: examples/echo-channel as a component of wit/tark.wit's channel-world, written as the core module a
;; component embeds (canonical ABI by hand; examples/build.py wraps it with `wasm-tools component`).
;;   info            static description
;;   start           records "started" in storage and logs it
;;   handle-webhook  keeps the request's body (JSON escapes undone) in storage key "pending"; ok(200 {"queued":true})
;;   poll            a kept body becomes one inbound message (and is cleared), else []
;;   send            ok({"success":true,"message_id":"<n>","error":null}), n counting up per instance
(module
  (import "tark:plugin/storage@0.1.0" "get" (func $storage_get (param i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "delete" (func $storage_delete (param i32 i32 i32)))
  (import "tark:plugin/log@0.1.0" "info" (func $log_info (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "echo")                                                  ;; 4
  (data (i32.const 1040) "Echo channel")                                          ;; 12
  (data (i32.const 1056) "Echoes webhook bodies back as inbound messages")        ;; 46
  (data (i32.const 1104) "\"body\"")                                              ;; 6
  (data (i32.const 1120) "pending")                                               ;; 7
  (data (i32.const 1136) "started")                                               ;; 7
  (data (i32.const 1152) "echo-channel: started")                                 ;; 21
  (data (i32.const 1184) "{\"status\":200,\"headers\":[[\"Content-Type\",\"application/json\"]],\"body\":\"{\\\"queued\\\":true}\",\"messages\":[]}")  ;; 103
  (data (i32.const 1296) "{\"status\":400,\"headers\":[],\"body\":\"no body\",\"messages\":[]}")  ;; 58
  (data (i32.const 1360) "webhook")                                               ;; 7
  (data (i32.const 1376) "{\"success\":true,\"message_id\":\"")                   ;; 30
  (data (i32.const 1408) "\",\"error\":null}")                                    ;; 15
  ;; scratch: 2048 return area, 2112 import return area, 2144 inbound record, 2200..2240 digits

  (global $sent (mut i32) (i32.const 0))
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
  ;; the JSON string starting after the quote at p, unescaped (\" \\ \/ \n \t \r; others kept) into a new block:
  ;; its length, the block at 2120; -1 if unterminated
  (func $unescape (param $p i32) (param $end i32) (result i32)
    (local $out i32) (local $o i32) (local $c i32)
    (local.set $out (call $alloc (i32.sub (local.get $end) (local.get $p))))
    (local.set $o (local.get $out))
    (block $bad
      (loop $next
        (br_if $bad (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.eq (local.get $c) (i32.const 34))
          (then (i32.store (i32.const 2120) (local.get $out)) (return (i32.sub (local.get $o) (local.get $out)))))
        (if (i32.eq (local.get $c) (i32.const 92))
          (then
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br_if $bad (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $c (i32.load8_u (local.get $p)))
            (if (i32.eq (local.get $c) (i32.const 110)) (then (local.set $c (i32.const 10))))
            (if (i32.eq (local.get $c) (i32.const 116)) (then (local.set $c (i32.const 9))))
            (if (i32.eq (local.get $c) (i32.const 114)) (then (local.set $c (i32.const 13))))
            (if (i32.eq (local.get $c) (i32.const 117))  ;; \u: kept as written
              (then (i32.store8 (local.get $o) (i32.const 92)) (local.set $o (i32.add (local.get $o) (i32.const 1)))))))
        (i32.store8 (local.get $o) (local.get $c))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (i32.const -1))
  (func $ok_unit (result i32)
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
  (func $ok_text (param $p i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (local.get $p))
    (i32.store (i32.const 2056) (local.get $len))
    (i32.const 2048))

  (func (export "tark:plugin/channel-plugin@0.1.0#info") (result i32)
    (i32.store (i32.const 2048) (i32.const 1024)) (i32.store (i32.const 2052) (i32.const 4))
    (i32.store (i32.const 2056) (i32.const 1040)) (i32.store (i32.const 2060) (i32.const 12))
    (i32.store (i32.const 2064) (i32.const 1056)) (i32.store (i32.const 2068) (i32.const 46))
    (i32.store8 (i32.const 2072) (i32.const 0))
    (i32.store8 (i32.const 2073) (i32.const 0))
    (i32.const 2048))

  (func (export "tark:plugin/channel-plugin@0.1.0#start") (result i32)
    (call $storage_set (i32.const 1136) (i32.const 7) (i32.const 1136) (i32.const 7) (i32.const 2112))
    (call $log_info (i32.const 1152) (i32.const 21))
    (call $ok_unit))

  (func (export "tark:plugin/channel-plugin@0.1.0#stop") (result i32)
    (call $ok_unit))

  (func (export "tark:plugin/channel-plugin@0.1.0#handle-webhook") (param $req i32) (param $len i32) (result i32)
    (local $end i32) (local $p i32) (local $n i32)
    (local.set $end (i32.add (local.get $req) (local.get $len)))
    (local.set $p (call $find (local.get $req) (local.get $end) (i32.const 1104) (i32.const 6)))
    (if (i32.ge_s (local.get $p) (i32.const 0))
      (then
        (local.set $p (call $skip_ws (i32.add (local.get $p) (i32.const 6)) (local.get $end)))
        (if (i32.and (i32.lt_u (local.get $p) (local.get $end)) (i32.eq (i32.load8_u (local.get $p)) (i32.const 58)))
          (then
            (local.set $p (call $skip_ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
            (if (i32.and (i32.lt_u (local.get $p) (local.get $end)) (i32.eq (i32.load8_u (local.get $p)) (i32.const 34)))
              (then
                (local.set $n (call $unescape (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
                (if (i32.ge_s (local.get $n) (i32.const 0))
                  (then
                    (call $storage_set (i32.const 1120) (i32.const 7) (i32.load (i32.const 2120)) (local.get $n) (i32.const 2112))
                    (return (call $ok_text (i32.const 1184) (i32.const 103)))))))))))
    (call $ok_text (i32.const 1296) (i32.const 58)))

  (func (export "tark:plugin/channel-plugin@0.1.0#poll") (result i32)
    (call $storage_get (i32.const 1120) (i32.const 7) (i32.const 2112))
    (if (i32.eqz (i32.load8_u (i32.const 2112)))
      (then
        (i32.store (i32.const 2048) (i32.const 0))
        (i32.store (i32.const 2052) (i32.const 0))
        (return (i32.const 2048))))
    ;; inbound-message { conversation-id, user-id, text, metadata-json } at 2144
    (i32.store (i32.const 2144) (i32.const 1360)) (i32.store (i32.const 2148) (i32.const 7))
    (i32.store (i32.const 2152) (i32.const 1360)) (i32.store (i32.const 2156) (i32.const 7))
    (i32.store (i32.const 2160) (i32.load (i32.const 2116))) (i32.store (i32.const 2164) (i32.load (i32.const 2120)))
    (i32.store (i32.const 2168) (i32.const 0)) (i32.store (i32.const 2172) (i32.const 0))
    (call $storage_delete (i32.const 1120) (i32.const 7) (i32.const 2112))
    (i32.store (i32.const 2048) (i32.const 2144))
    (i32.store (i32.const 2052) (i32.const 1))
    (i32.const 2048))

  (func (export "tark:plugin/channel-plugin@0.1.0#send") (param i32 i32) (result i32)
    (local $out i32) (local $d i32) (local $n i32) (local $o i32)
    (global.set $sent (i32.add (global.get $sent) (i32.const 1)))
    (local.set $n (global.get $sent))
    (local.set $d (i32.const 2240))
    (loop $digit
      (local.set $d (i32.sub (local.get $d) (i32.const 1)))
      (i32.store8 (local.get $d) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (local.set $out (call $alloc (i32.const 64)))
    (memory.copy (local.get $out) (i32.const 1376) (i32.const 30))
    (local.set $o (i32.add (local.get $out) (i32.const 30)))
    (memory.copy (local.get $o) (local.get $d) (i32.sub (i32.const 2240) (local.get $d)))
    (local.set $o (i32.add (local.get $o) (i32.sub (i32.const 2240) (local.get $d))))
    (memory.copy (local.get $o) (i32.const 1408) (i32.const 15))
    (call $ok_text (local.get $out) (i32.sub (i32.add (local.get $o) (i32.const 15)) (local.get $out))))
)
