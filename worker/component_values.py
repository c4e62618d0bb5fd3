"""Between the core ABI's bytes and wit/tark.wit's typed values, for the component host (docs/components.md).

The supervisor calls every plugin the same way: a core export name, string arguments, a result capacity. For a
component, `to_wit_args` turns those strings into the WIT function's arguments and `to_core` turns its WIT
result into the return code and result bytes the same export of a core module would have produced. So everything
above the worker (chat, auth, tools, hooks, channels) works unchanged, whichever ABI a plugin uses.

wasmtime-py hands results over as plain Python values: records as `Record` (attributes named as in the WIT,
hyphens and all), enums as str, `option` as None-or-value, and a `result` or variant as a `Variant(tag, payload)`
only when its cases cannot be told apart by Python type (`result<string, string>`), otherwise as the bare payload
(`result<_, string>`: None = ok, str = err). A component may export a function of another type under a table
name, so every converter checks what it got and fails the call with `bad_result` if it is not what the WIT says.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from wasmtime.component import Record, Variant

from policy import abi, tark_json


class BadValue(Exception):
    """A value of the wrong shape: an argument the WIT cannot take, or a result that is not what the WIT says."""


def make_record(**fields: Any) -> Record:
    """A WIT record value; keyword names use '_' where the WIT has '-'."""
    record = Record()
    for name, value in fields.items():
        setattr(record, name.replace("_", "-"), value)
    return record


def field(record: Any, name: str, kinds: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(record, Record):
        raise BadValue(f"{what} is {_type_name(record)}; expected a record")
    value = getattr(record, name, None)
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is int):
        raise BadValue(f"{what}.{name} is {_type_name(value)}")
    return value


# --------------------------------------------------------------------------- arguments (host -> guest)


def to_wit_args(entry: abi.Export, args: list[bytes]) -> list[Any]:
    if len(args) != len(entry.args):
        raise BadValue(f"'{entry.core}' takes {len(entry.args)} argument(s), {len(args)} given")
    return [_ARG_CONVERTERS[kind](_text(arg, entry.core)) for kind, arg in zip(entry.args, args)]


def _text(arg: bytes, export: str) -> str:
    try:
        return arg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadValue(f"an argument of '{export}' is not UTF-8 (byte {exc.start})") from None


def _messages(text: str) -> list[Record]:
    """tark's messages JSON (`[{"role":"user","content":"hi"}]`) as `message` records; content that is not a
    string becomes "" (as tark sends it to core providers)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadValue(f"the messages are not valid JSON: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise BadValue("the messages are not a JSON array of objects")
    return [
        make_record(role=str(m.get("role", "")), content=m["content"] if isinstance(m.get("content"), str) else "")
        for m in value
    ]


_ARG_CONVERTERS: dict[str, Callable[[str], Any]] = {"string": lambda text: text, "messages": _messages}


# --------------------------------------------------------------------------- results (guest -> host)


def to_core(entry: abi.Export, value: Any) -> tuple[int, bytes | None, str | None]:
    """The export's core return code, result bytes (None for status-only exports) and, for a status-only export
    that failed, the guest's error text (the core ABI has no buffer for it: the worker logs it)."""
    return _RESULT_CONVERTERS[entry.result](value)


def _json(value: Any) -> tuple[int, bytes, None]:
    data = tark_json.dumps(value).encode()
    return len(data), data, None


def _error(message: str) -> tuple[int, bytes, None]:
    """A failure in the form tark's gemini and chatgpt plugins use: `{"error": ...}` in the buffer, -len."""
    data = tark_json.dumps({"error": message}).encode()
    return -len(data), data, None


def _text_result(value: Any) -> tuple[int, bytes, None]:
    data = _str(value, "the result").encode()
    return len(data), data, None


def _split_result(value: Any, what: str) -> tuple[bool, Any]:
    """(ok, payload) of a WIT `result<T, string>`, whichever way wasmtime-py represents it."""
    if isinstance(value, Variant):
        if value.tag not in ("ok", "err"):
            raise BadValue(f"{what} is a variant '{value.tag}'; expected a result")
        if value.tag == "err":
            return False, _str(value.payload, f"{what} (err)")
        return True, value.payload
    if isinstance(value, str):
        return False, value
    return True, value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadValue(f"{what} is {_type_name(value)}; expected a string")
    return value


def _provider_info(value: Any) -> tuple[int, bytes, None]:
    name = _str(value, "name()")
    return _json({"id": name, "display_name": name})


def _provider_models(value: Any) -> tuple[int, bytes, None]:
    if not isinstance(value, list):
        raise BadValue(f"models() is {_type_name(value)}; expected a list of strings")
    return _json([{"id": _str(m, "a model")} for m in value])


def _chat_response(value: Any) -> tuple[int, bytes, None]:
    ok, payload = _split_result(value, "chat()")
    if not ok:
        return _error(payload)
    text = field(payload, "content", str, "chat-response")
    tokens = field(payload, "usage-tokens", int, "chat-response")
    return _json({"text": text, "usage": {"input_tokens": 0, "output_tokens": tokens}, "finish_reason": "stop"})


def _auth_status(value: Any) -> tuple[int, None, None]:
    if value not in abi.AUTH_STATUS_CODES:
        raise BadValue(f"status() is {value!r}; expected one of {', '.join(abi.AUTH_STATUS_CODES)}")
    return abi.AUTH_STATUS_CODES[value], None, None


def _device_code(value: Any) -> tuple[int, bytes, None]:
    ok, payload = _split_result(value, "start-device-flow()")
    if not ok:
        return _error(payload)
    return _json({
        "device_code": field(payload, "device-code", str, "device-code"),
        "user_code": field(payload, "user-code", str, "device-code"),
        "verification_uri": field(payload, "verification-uri", str, "device-code"),
        "expires_in": field(payload, "expires-in", int, "device-code"),
        "interval": field(payload, "interval", int, "device-code"),
    })


def _poll_result(value: Any) -> tuple[int, bytes, None]:
    if not isinstance(value, Variant) or value.tag not in ("success", "pending", "error"):
        raise BadValue(f"poll() is {_type_name(value)}; expected success, pending or error(string)")
    if value.tag == "error":
        return _json({"status": "error", "error": _str(value.payload, "poll() error")})
    return _json({"status": value.tag})


def _text_or_error(value: Any) -> tuple[int, bytes, None]:
    ok, payload = _split_result(value, "the result")
    return _text_result(payload) if ok else _error(payload)


def _status_or_error(value: Any) -> tuple[int, None, str | None]:
    if value is None:
        return 0, None, None
    ok, payload = _split_result(value, "the result")
    if ok:
        if payload is not None:
            raise BadValue(f"the result is {_type_name(payload)}; expected result<_, string>")
        return 0, None, None
    return -1, None, payload


def _tool_defs(value: Any) -> tuple[int, bytes, None]:
    if not isinstance(value, list):
        raise BadValue(f"get-tools() is {_type_name(value)}; expected a list of tool-def")
    return _json([
        {
            "name": field(t, "name", str, "tool-def"),
            "description": field(t, "description", str, "tool-def"),
            "parameters_schema": field(t, "parameters-schema", str, "tool-def"),
        }
        for t in value
    ])


def _risk_level(value: Any) -> tuple[int, None, None]:
    if value not in abi.RISK_LEVEL_CODES:
        raise BadValue(f"get-risk-level() is {value!r}; expected one of {', '.join(abi.RISK_LEVEL_CODES)}")
    return abi.RISK_LEVEL_CODES[value], None, None


def _tool_result(value: Any) -> tuple[int, bytes, None]:
    error = field(value, "error", (str, type(None)), "tool-result")
    return _json({
        "success": field(value, "success", bool, "tool-result"),
        "output": field(value, "output", str, "tool-result"),
        "error": error,
    })


def _nothing(value: Any) -> tuple[int, None, None]:
    if value is not None:
        raise BadValue(f"the hook returned {_type_name(value)}; hooks return nothing")
    return 0, None, None


def _channel_info(value: Any) -> tuple[int, bytes, None]:
    return _json({
        "id": field(value, "id", str, "channel-info"),
        "display_name": field(value, "display-name", str, "channel-info"),
        "description": field(value, "description", str, "channel-info"),
        "supports_streaming": field(value, "supports-streaming", bool, "channel-info"),
        "supports_edits": field(value, "supports-edits", bool, "channel-info"),
    })


def _inbound_messages(value: Any) -> tuple[int, bytes, None]:
    if not isinstance(value, list):
        raise BadValue(f"poll() is {_type_name(value)}; expected a list of inbound-message")
    return _json([
        {
            "conversation_id": field(m, "conversation-id", str, "inbound-message"),
            "user_id": field(m, "user-id", str, "inbound-message"),
            "text": field(m, "text", str, "inbound-message"),
            "metadata_json": field(m, "metadata-json", str, "inbound-message"),
        }
        for m in value
    ])


_RESULT_CONVERTERS: dict[str, Callable[[Any], tuple[int, bytes | None, str | None]]] = {
    "provider_info": _provider_info,
    "provider_models": _provider_models,
    "chat_response": _chat_response,
    "text": _text_result,
    "auth_status": _auth_status,
    "device_code": _device_code,
    "poll_result": _poll_result,
    "text_or_error": _text_or_error,
    "status_or_error": _status_or_error,
    "tool_defs": _tool_defs,
    "risk_level": _risk_level,
    "tool_result": _tool_result,
    "nothing": _nothing,
    "channel_info": _channel_info,
    "inbound_messages": _inbound_messages,
}
assert {e.result for e in abi.EXPORTS} <= set(_RESULT_CONVERTERS), "a table entry without a converter"


def _type_name(value: Any) -> str:
    if isinstance(value, Variant):
        return f"a variant '{value.tag}'"
    return "nothing" if value is None else f"a {type(value).__name__}"
