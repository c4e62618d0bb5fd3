"""The JSON the host writes into a guest is byte for byte what tark (serde_json) writes: compact, tark's field
order, non-ASCII as UTF-8, only `"`, `\\` and U+0000-U+001F escaped. Expected bytes are written by hand from tark's
shapes (docs/architecture.md, "JSON handed to guests")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy import tark_json
from policy.tools import ToolResult, encode_args, tool_error
from supervisor.channels.messages import send_request_json, webhook_request_json
from supervisor.chat.types import Message
from supervisor.oauth.tokens import callback_input
from tests.test_chat import add, provider_exports
from tests.wasm_fixtures import make_guest


def chat_payload(*messages: tuple[str, str]) -> bytes:
    return tark_json.dumps_bytes([Message(role, content).to_json() for role, content in messages])


def test_chat_messages_are_compact_with_role_before_content():
    assert chat_payload(("system", "be brief"), ("user", "hi")) == \
        b'[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]'


def test_non_ascii_stays_utf8():
    assert chat_payload(("user", "héllo ☃ 😀")) == \
        '[{"role":"user","content":"héllo ☃ 😀"}]'.encode("utf-8")


def test_quotes_backslashes_and_control_characters_are_escaped_as_serde_json_does():
    text = 'say "hi"\\ \n\r\t\b\f \x00\x01\x1f'
    assert chat_payload(("user", text)) == \
        b'[{"role":"user","content":"say \\"hi\\"\\\\ \\n\\r\\t\\b\\f \\u0000\\u0001\\u001f"}]'


def test_del_and_line_separators_are_left_raw_like_serde_json():
    assert tark_json.dumps_bytes("\x7f\u2028\u2029") == b'"\x7f\xe2\x80\xa8\xe2\x80\xa9"'


def test_non_finite_numbers_are_refused_not_written_as_nan():
    with pytest.raises(ValueError):
        tark_json.dumps(float("nan"))


def test_channel_requests_keep_tarks_struct_field_order():
    assert webhook_request_json("POST", "/channels/d/webhook", None, [("content-type", "application/json")],
                                "é".encode()) == \
        '{"method":"POST","path":"/channels/d/webhook","query":null,"headers":[["content-type",' \
        '"application/json"]],"body":"é"}'
    assert send_request_json("c1", "hi", None, True) == \
        '{"conversation_id":"c1","text":"hi","message_id":null,"is_final":true,"metadata_json":""}'


def test_tool_and_hook_payloads():
    assert encode_args({"path": "ü", "n": 1}) == '{"path":"ü","n":1}'
    assert ToolResult(True, "ö\n", None).to_json() == '{"success":true,"output":"ö\\n","error":null}'
    assert tool_error("p", "t", "ß").args == ('{"plugin":"p","tool":"t","error":"ß"}',)


def test_oauth_tokens_keep_non_ascii_as_utf8():
    assert callback_input({"access_token": "tök", "expires_in": 60}) == \
        '{"access_token":"tök","refresh_token":null,"id_token":null,"expires_in":60,"token_type":null,' \
        '"scope":null}'


# provider_chat of a minimal guest that scans the bytes: if they start with exactly `[{"role":"user","content":"`
# it answers {"text":"echo: <the rest up to the closing "}]>"}, else {"text":"echo: "}.
PREFIX = '[{"role":"user","content":"'
WAT_PREFIX = PREFIX.replace('"', '\\"')
SCANNER = provider_exports('[{"id":"scan-1"}]') + f"""
  (data (i32.const 400) "{WAT_PREFIX}")
  (data (i32.const 460) "{{\\"text\\":\\"echo: ")
  (data (i32.const 480) "\\"}}")
  (func (export "provider_chat") (param $m i32) (param $ml i32) (param $model i32) (param $model_len i32)
                                 (param $ret i32) (result i32)
    (local $i i32) (local $out i32) (local $rest i32)
    (memory.copy (local.get $ret) (i32.const 460) (i32.const 15))
    (local.set $out (i32.add (local.get $ret) (i32.const 15)))
    (block $emit
      (br_if $emit (i32.lt_u (local.get $ml) (i32.const {len(PREFIX) + 3})))
      (block $mismatch
        (loop $cmp
          (br_if $mismatch (i32.ne (i32.load8_u (i32.add (local.get $m) (local.get $i)))
                                   (i32.load8_u (i32.add (i32.const 400) (local.get $i)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $cmp (i32.lt_u (local.get $i) (i32.const {len(PREFIX)}))))
        (local.set $rest (i32.sub (local.get $ml) (i32.const {len(PREFIX) + 3})))
        (memory.copy (local.get $out) (i32.add (local.get $m) (i32.const {len(PREFIX)})) (local.get $rest))
        (local.set $out (i32.add (local.get $out) (local.get $rest)))))
    (memory.copy (local.get $out) (i32.const 480) (i32.const 2))
    (i32.sub (i32.add (local.get $out) (i32.const 2)) (local.get $ret)))
"""


@pytest.mark.parametrize("message", ["hi", "héllo \"wörld\"\nline two ☃"])
def test_a_guest_scanning_the_bytes_gets_tarks_exact_messages_through_tark_chat(cli, tmp_path: Path, message):
    make_guest(tmp_path / "scanner", SCANNER, name="scanner")
    add(cli, tmp_path / "scanner")
    result = cli("chat", "--json", "--provider", "scanner", message)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == f"echo: {message}"

