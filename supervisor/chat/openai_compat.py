"""`api_mode = "openai_compat"`: the plugin's endpoint, used exactly as given, speaking one of two OpenAI shapes.

As tark (src/llm/openai_compat.rs): nothing is appended to the endpoint; an endpoint containing `/responses` or
`/codex/` speaks the Responses API (supervisor/chat/responses_api.py), any other Chat Completions (here). The
supervisor, not the plugin, sends the conversation and the plugin's token to an endpoint the plugin chose, so the
endpoint must be one the plugin's effective http grants allow (policy/grants.py: declared, approved, allowed by
the admin policy); supervisor/chat/model_http.py bounds the exchange itself.
"""

from __future__ import annotations

from typing import Any, Callable

import httpx

from policy.grants import EffectiveGrants, HttpAccess
from policy.patterns import parse_url_target
from supervisor.chat.types import ChatError, Message, Usage, count

API = "openai-compat"  # how tark names this client in its messages
MAX_TOKENS = 4096  # tark's OpenAiCompatConfig default, which the plugin path never overrides
RESPONSES_MARKERS = ("/responses", "/codex/")


def uses_responses_api(endpoint: str) -> bool:
    return any(marker in endpoint for marker in RESPONSES_MARKERS)


def endpoint_url(endpoint: str) -> httpx.URL:
    try:
        url = httpx.URL(endpoint.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise ChatError(f"The model API endpoint {endpoint[:200]!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ChatError(f"The model API endpoint {endpoint[:200]!r} is not an http(s) URL")
    return url


def allowed_url(plugin: str, grants: Callable[[], EffectiveGrants], endpoint: str) -> httpx.URL:
    """The endpoint as the URL to post to, if the plugin's grants allow it (the host exactly as checked)."""
    url = endpoint_url(endpoint)
    decision = grants().check(HttpAccess(str(url)))
    if not decision.allowed:
        raise ChatError(
            f"Plugin '{plugin}' asks tark to send the conversation and its token to {url}, which its http grants "
            f"do not allow ({decision.reason}); the plugin's manifest must list that host, and it must be approved "
            f"(tark plugin permissions {plugin})")
    return httpx.URL(parse_url_target(str(url)).url)


# --------------------------------------------------------------------------- Chat Completions


def completions_body(model: str, messages: list[Message], *, stream: bool) -> dict[str, Any]:
    """tark's OpenAiRequest: model, messages, max_tokens, and `stream` only when streaming."""
    body: dict[str, Any] = {"model": model, "messages": [m.to_json() for m in messages], "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
    return body


def _bad(detail: str) -> ChatError:
    return ChatError(f"Failed to parse {API} API response: {detail}")


def parse_completion(data: dict[str, Any]) -> tuple[str, Usage | None, str | None]:
    """`choices[0].message.content`, `usage.prompt_tokens`/`completion_tokens` and `finish_reason`."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad("'choices' must be a non-empty array of objects")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _bad("'choices[0].message' must be an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _bad("'choices[0].message.content' must be a string")
    return content or "", completion_usage(data), _finish_reason(choice)


def completion_usage(data: dict[str, Any]) -> Usage | None:
    raw = data.get("usage")
    if isinstance(raw, dict) and count(raw.get("prompt_tokens")) and count(raw.get("completion_tokens")):
        return Usage(raw["prompt_tokens"], raw["completion_tokens"])
    return None


def _finish_reason(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise _bad("'choices[0].finish_reason' must be a string")
    return reason


class CompletionsStream:
    """Chat Completions chunks (`choices[0].delta.content`), `[DONE]` at the end; usage if a chunk has it."""

    api = API

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def feed(self, event: dict[str, Any]) -> str:
        """The text this event adds."""
        usage = completion_usage(event)
        if usage is not None:
            self.usage = usage
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""  # e.g. the usage-only last chunk
        choice = choices[0]
        self.finish_reason = _finish_reason(choice) or self.finish_reason
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is not None and not isinstance(content, str):
            raise ChatError(f"The {API} API sent a malformed event: 'choices[0].delta.content' must be a string")
        return content or ""
