"""The JSON a channel plugin exchanges with the host (tark core ABI §3.3): building requests, validating what the
plugin returns, and splitting long final texts. No I/O.

Everything a plugin returns is untrusted: each parser raises `ChannelDataError` with tark's message
(`Failed to parse <X> JSON`) plus what exactly was wrong, never anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

import attrs

from policy import tark_json

MAX_MESSAGE_BYTES = 1800  # tark's remote.max_message_chars, counted in UTF-8 bytes
MAX_JSON_DEPTH = 64
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# headers the HTTP layer owns: a plugin setting them could break the framing of the response
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class ChannelDataError(Exception):
    """A plugin returned JSON that does not have the shape the ABI requires."""


@attrs.frozen
class InboundMessage:
    conversation_id: str
    user_id: str
    text: str
    metadata_json: str = ""


@attrs.frozen
class WebhookResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: str
    messages: tuple[InboundMessage, ...]


@attrs.frozen
class SendResult:
    success: bool
    message_id: str | None
    error: str | None


# ---------------------------------------------------------------------------------------------- host -> plugin

def is_visible_ascii(value: str) -> bool:
    """What the http crate's HeaderValue::to_str accepts: tab and printable ASCII."""
    return all(c == "\t" or " " <= c <= "~" for c in value)


def webhook_request_json(method: str, path: str, query: str | None, headers: Iterable[tuple[str, str]],
                         body: bytes) -> str:
    """The webhook request: lower-case header names, pairs with non-visible-ASCII values dropped, lossy UTF-8 body.
    Unlike tark (always null), `query` carries the raw query string when the URL has one."""
    pairs = [[name.lower(), value] for name, value in headers if is_visible_ascii(value)]
    return _dumps({"method": method, "path": path, "query": query or None, "headers": pairs,
                   "body": body.decode("utf-8", errors="replace")})


def send_request_json(conversation_id: str, text: str, message_id: str | None, is_final: bool,
                      metadata_json: str = "") -> str:
    return _dumps({"conversation_id": conversation_id, "text": text, "message_id": message_id,
                   "is_final": is_final, "metadata_json": metadata_json})


def split_text(text: str, max_bytes: int = MAX_MESSAGE_BYTES) -> list[str]:
    """Chunks of at most `max_bytes` UTF-8 bytes, cut only between characters; "" stays one empty chunk."""
    if max_bytes < 4:
        raise ValueError("max_bytes must leave room for any UTF-8 character")
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8", errors="surrogatepass"))
        if size + width > max_bytes:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    chunks.append("".join(current))
    return chunks


def _dumps(document: Any) -> str:
    return tark_json.dumps(document)


# ---------------------------------------------------------------------------------------------- plugin -> host

def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ChannelDataError(f"Failed to parse {what} JSON: nested too deeply") from None
    except ValueError as exc:
        raise ChannelDataError(f"Failed to parse {what} JSON: {exc}") from None


def _string(value: Any, field: str, what: str, *, optional: bool = False, default: str | None = None) -> str | None:
    if value is None and optional:
        return default
    if not isinstance(value, str):
        kind = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise ChannelDataError(f"Failed to parse {what} JSON: '{field}' is {kind}")
    return value


def parse_inbound(text: str, what: str = "channel poll") -> list[InboundMessage]:
    """An inbound array: `[{"conversation_id","user_id","text","metadata_json"?}]` (unknown keys ignored)."""
    return _inbound_list(_load(text, what), what)


def _inbound_list(value: Any, what: str) -> list[InboundMessage]:
    if not isinstance(value, list):
        raise ChannelDataError(f"Failed to parse {what} JSON: expected an array of messages")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ChannelDataError(f"Failed to parse {what} JSON: message {index} is not an object")
        where = f"{what} message {index}"
        messages.append(InboundMessage(
            conversation_id=_string(item.get("conversation_id"), "conversation_id", where),
            user_id=_string(item.get("user_id"), "user_id", where),
            text=_string(item.get("text"), "text", where),
            metadata_json=_string(item.get("metadata_json"), "metadata_json", where, optional=True, default=""),
        ))
    return messages


def parse_webhook_response(text: str) -> WebhookResponse:
    """`{"status","headers"?,"body"?,"messages"?}`. An out-of-range status becomes 200 (tark); a header that is not
    a valid [name, value] pair is an error (HTTP 500 at the caller)."""
    what = "webhook response"
    value = _load(text, what)
    if not isinstance(value, dict):
        raise ChannelDataError(f"Failed to parse {what} JSON: expected an object")
    status = value.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        raise ChannelDataError(f"Failed to parse {what} JSON: 'status' must be an integer")
    if not 200 <= status <= 599:
        status = 200
    raw_headers = value.get("headers") or []
    if not isinstance(raw_headers, list):
        raise ChannelDataError(f"Failed to parse {what} JSON: 'headers' must be an array of [name, value] pairs")
    headers = []
    for pair in raw_headers:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ChannelDataError(f"Failed to parse {what} JSON: header {pair!r} is not a [name, value] pair")
        name, header_value = pair
        if not _TOKEN.match(name):
            raise ChannelDataError(f"Invalid webhook response header name: {name!r}")
        if not is_visible_ascii(header_value):
            raise ChannelDataError(f"Invalid webhook response header value for {name}")
        if name.lower() not in _FRAMING_HEADERS:
            headers.append((name, header_value))
    body = _string(value.get("body"), "body", what, optional=True, default="")
    messages = _inbound_list(value.get("messages") or [], what)
    return WebhookResponse(status=status, headers=tuple(headers), body=body, messages=tuple(messages))


def parse_send_result(text: str) -> SendResult:
    """`{"success": bool, "message_id"?: str, "error"?: str}`; `success` is required."""
    what = "send result"
    value = _load(text, what)
    if not isinstance(value, dict) or not isinstance(value.get("success"), bool):
        raise ChannelDataError(f"Failed to parse {what} JSON: 'success' must be true or false")
    message_id = value.get("message_id")
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        message_id = str(message_id)
    return SendResult(
        success=value["success"],
        message_id=_string(message_id, "message_id", what, optional=True),
        error=_string(value.get("error"), "error", what, optional=True),
    )


def parse_channel_info(text: str) -> tuple[str, str]:
    """(id, display_name) from channel_info; both are required."""
    what = "channel info"
    value = _load(text, what)
    if not isinstance(value, dict):
        raise ChannelDataError(f"Failed to parse {what} JSON: expected an object")
    return _string(value.get("id"), "id", what), _string(value.get("display_name"), "display_name", what)
