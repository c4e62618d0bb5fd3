"""The value types of a chat: messages, replies, usage, and the error every chat failure is reported as."""

from __future__ import annotations

from typing import Any, Callable

import attrs

ROLES = ("system", "user", "assistant", "tool")

OnText = Callable[[str], None]  # takes each piece of a streamed reply as it arrives


class ChatError(Exception):
    """A chat that cannot start or a turn that failed; the message names the cause and, where there is one, the fix."""


@attrs.frozen
class ModelApiLimits:
    """Bounds of an auth-only provider's model API requests (supervisor/chat/model_http.py)."""

    connect_timeout_s: float = 10.0
    total_timeout_s: float = 120.0
    max_response_bytes: int = 8 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024


@attrs.frozen
class Message:
    role: str = attrs.field(validator=attrs.validators.in_(ROLES))
    content: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@attrs.frozen
class Usage:
    input_tokens: int
    output_tokens: int

    def to_json(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@attrs.frozen
class ChatReply:
    text: str
    usage: Usage | None
    finish_reason: str | None
    # the plugin worker that answered: provider_chat's (adapter) or provider_auth_credentials' (auth-only)
    worker_pid: int | None


def excerpt(text: str, limit: int = 300) -> str:
    """One line of at most `limit` characters, for quoting untrusted text in an error message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def count(value: Any) -> bool:
    """A token count: a non-negative integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def json_kind(value: Any) -> str:
    """How JSON calls the type of a decoded value (for parse errors)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
