"""The OpenAI Responses API shape of `openai_compat` endpoints containing `/responses` or `/codex/` (the
published ChatGPT provider's `https://chatgpt.com/backend-api/codex/responses`), as tark builds and reads it
(src/llm/openai_compat.rs at the tark version docs/chat.md names)."""

from __future__ import annotations

from typing import Any

from supervisor.chat.openai_compat import API, MAX_TOKENS
from supervisor.chat.types import ChatError, Message, Usage, count

RESPONSES_API = f"{API} Responses"  # "Failed to parse openai-compat Responses API response"
CODEX_INSTRUCTIONS = "You are a helpful coding assistant."  # tark's default: codex models require instructions
TEXT_DELTA = "response.output_text.delta"
COMPLETED = "response.completed"
FAILED = ("response.failed", "error")


def is_chatgpt_codex(endpoint: str) -> bool:
    """tark leaves out max_output_tokens for these: the ChatGPT codex backend refuses it."""
    return "chatgpt.com" in endpoint and "codex" in endpoint


def responses_body(endpoint: str, model: str, messages: list[Message], *, stream: bool) -> dict[str, Any]:
    """tark's ResponsesApiRequest, keys in its field order: model, input, instructions?, max_output_tokens?,
    stream?, store (false: the codex backend requires it)."""
    system = [m.content for m in messages if m.role == "system"]
    body: dict[str, Any] = {"model": model, "input": [_input(m) for m in messages if m.role != "system"]}
    if system:
        body["instructions"] = "\n\n".join(system)
    elif "codex" in model.lower():
        body["instructions"] = CODEX_INSTRUCTIONS
    if not is_chatgpt_codex(endpoint):
        body["max_output_tokens"] = MAX_TOKENS
    if stream:
        body["stream"] = True
    body["store"] = False
    return body


def _input(message: Message) -> dict[str, str]:
    if message.role == "tool":  # the Responses API has no tool role without call ids: tark's labelled user text
        return {"role": "user", "content": f"[Tool result]:\n{message.content}"}
    return message.to_json()


def _bad(detail: str) -> ChatError:
    return ChatError(f"Failed to parse {RESPONSES_API} API response: {detail}")


def parse_response(data: dict[str, Any]) -> tuple[str, Usage | None, str | None]:
    """The `output_text` items of the `message` outputs joined with newlines, `usage`, and `status`."""
    output = data.get("output")
    if not isinstance(output, list):
        raise _bad("'output' must be an array")
    texts = []
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content") or []
        if not isinstance(content, list):
            raise _bad("a message's 'content' must be an array")
        for part in content:
            if isinstance(part, dict) and part.get("type") == "output_text" and part.get("text") is not None:
                if not isinstance(part["text"], str):
                    raise _bad("an output_text's 'text' must be a string")
                texts.append(part["text"])
    status = data.get("status")
    return "\n".join(texts), response_usage(data), status if isinstance(status, str) else None


def response_usage(data: dict[str, Any]) -> Usage | None:
    raw = data.get("usage")
    if isinstance(raw, dict) and count(raw.get("input_tokens")) and count(raw.get("output_tokens")):
        return Usage(raw["input_tokens"], raw["output_tokens"])
    return None


class ResponsesStream:
    """Responses streaming events: text from `response.output_text.delta`, usage and status from
    `response.completed`; `response.failed` and `error` end the turn with the server's message (tark ignores
    them and shows an empty reply). Other event types are skipped."""

    api = RESPONSES_API

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def feed(self, event: dict[str, Any]) -> str:
        kind = event.get("type")
        if kind == TEXT_DELTA:
            delta = event.get("delta")
            if delta is not None and not isinstance(delta, str):
                raise ChatError(f"The {API} API sent a malformed event: '{TEXT_DELTA}' needs a string 'delta'")
            return delta or ""
        if kind == COMPLETED and isinstance(event.get("response"), dict):
            self.usage = response_usage(event["response"])
            status = event["response"].get("status")
            self.finish_reason = status if isinstance(status, str) else None
        elif kind in FAILED:
            raise ChatError(f"The {API} API reported an error: {_error_text(event)}")
        return ""


def _error_text(event: dict[str, Any]) -> str:
    for holder in (event.get("response"), event):
        error = holder.get("error") if isinstance(holder, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(holder, dict) and isinstance(holder.get("message"), str):
            return holder["message"]
    return str(event.get("type"))
