"""`api_mode = "cloud_code_assist"`: native Gemini through Google's Cloud Code Assist API, the endpoint tark's
Gemini client uses with a plugin's OAuth token and project (src/llm/gemini.rs).

`POST <base>:generateContent` (streaming: `<base>:streamGenerateContent?alt=sse`) with the bearer token, the
client headers tark sends, and `{"model", "project", "request": <a Gemini generateContent request>}`; the reply
(each streamed event too) is `{"response": <GenerateContentResponse>}`. The base is tark's unless the user sets
TARK_CLOUD_CODE_ASSIST_ENDPOINT (docs/chat.md), e.g. to point it at a local test server.
"""

from __future__ import annotations

from typing import Any, Mapping

import httpx

from supervisor.chat.model_http import status_text
from supervisor.chat.types import ChatError, Message, Usage, count, excerpt

API = "Cloud Code Assist"
ENDPOINT_ENV = "TARK_CLOUD_CODE_ASSIST_ENDPOINT"
DEFAULT_BASE = "https://cloudcode-pa.googleapis.com/v1internal"
DEFAULT_MODEL = "gemini-2.0-flash"  # tark's default for plugin providers in this mode
FALLBACK_MODEL = "gemini-2.5-flash"  # what tark's normalisation gives for an empty or bare experimental id
MAX_OUTPUT_TOKENS = 8192
TEMPERATURE = 1.0
CLIENT_HEADERS = (
    ("User-Agent", "google-api-nodejs-client/9.15.1"),
    ("X-Goog-Api-Client", "gl-node/22.17.0"),
    ("Client-Metadata", "ideType=IDE_UNSPECIFIED,platform=PLATFORM_UNSPECIFIED,pluginType=GEMINI"),
)


def base_url(environ: Mapping[str, str]) -> str:
    """The API base: tark's, or the user's override (an http(s) URL, used as given but for a trailing `/`)."""
    value = environ.get(ENDPOINT_ENV, "").strip()
    if not value:
        return DEFAULT_BASE
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ChatError(f"{ENDPOINT_ENV}={value[:200]!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ChatError(f"{ENDPOINT_ENV}={value[:200]!r} must be an http(s) URL without a query, like "
                        f"{DEFAULT_BASE}")
    return value.rstrip("/")


def override_host(environ: Mapping[str, str]) -> frozenset[str]:
    """The host the user named in the override: netguard lets it be an internal address (the user chose it)."""
    if not environ.get(ENDPOINT_ENV, "").strip():
        return frozenset()
    return frozenset({httpx.URL(base_url(environ)).host.lower()})


def method_url(base: str, *, stream: bool) -> httpx.URL:
    return httpx.URL(f"{base}:streamGenerateContent?alt=sse" if stream else f"{base}:generateContent")


def normalize_model(model: str) -> str:
    """tark's normalize_cloud_code_assist_model: the API refuses experimental suffixes (`-exp...`), previews
    pass."""
    trimmed = model.strip()
    lower = trimmed.lower()
    if not trimmed:
        return FALLBACK_MODEL
    if "preview" in lower:
        return trimmed
    for marker in ("-exp", "-experimental"):
        index = lower.find(marker)
        if index >= 0:
            return trimmed[:index].rstrip("-") or FALLBACK_MODEL
    return trimmed


def request_body(project: str, model: str, messages: list[Message]) -> dict[str, Any]:
    """Keys sorted as tark's `json!` object gives them. System messages: the last one is the systemInstruction
    (as in tark); user turns have role `user`, assistant turns `model` (empty ones left out, as tark does); tool
    messages carry no call id here, and tark drops such messages."""
    system = [m.content for m in messages if m.role == "system"]
    contents = [{"role": "user" if m.role == "user" else "model", "parts": [{"text": m.content}]}
                for m in messages if m.role == "user" or (m.role == "assistant" and m.content)]
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": system[-1]}]}
    request["generationConfig"] = {"maxOutputTokens": MAX_OUTPUT_TOKENS, "temperature": TEMPERATURE}
    return {"model": model, "project": project, "request": request}


def error_message(status: int, body: str) -> str:
    """tark's message for a failed non-streaming call."""
    return f"{API} API error ({status_text(status)}): {excerpt(body) or '(empty body)'}"


def _bad(detail: str) -> ChatError:
    return ChatError(f"Failed to parse {API} API response: {detail}")


def _inner(data: dict[str, Any]) -> dict[str, Any]:
    inner = data.get("response")
    if not isinstance(inner, dict):
        raise _bad("'response' must be an object")
    return inner


def _first_candidate(inner: dict[str, Any]) -> dict[str, Any] | None:
    candidates = inner.get("candidates")
    if candidates is None:
        return None
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise _bad("'candidates' must be an array of objects")
    return candidates[0] if candidates else None


def _texts(candidate: dict[str, Any] | None) -> list[str]:
    """The text parts that are not thoughts."""
    content = (candidate or {}).get("content")
    if content is None:
        return []
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise _bad("'content.parts' must be an array")
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("text") is None or part.get("thought") is True:
            continue
        if not isinstance(part["text"], str):
            raise _bad("a part's 'text' must be a string")
        texts.append(part["text"])
    return texts


def _usage(inner: dict[str, Any]) -> Usage | None:
    """Only when all three counts are there, as tark (streams send them in the last event)."""
    raw = inner.get("usageMetadata")
    if isinstance(raw, dict) and all(count(raw.get(k)) for k in
                                     ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")):
        return Usage(raw["promptTokenCount"], raw["candidatesTokenCount"])
    return None


def _finish_reason(candidate: dict[str, Any] | None) -> str | None:
    reason = (candidate or {}).get("finishReason")
    return reason if isinstance(reason, str) else None


def parse_response(data: dict[str, Any]) -> tuple[str, Usage | None, str | None]:
    inner = _inner(data)
    candidate = _first_candidate(inner)
    return "\n".join(_texts(candidate)), _usage(inner), _finish_reason(candidate)


class CodeAssistStream:
    """Each event is a `{"response": ...}` chunk: its text parts are the next piece of the reply."""

    api = API

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def feed(self, event: dict[str, Any]) -> str:
        inner = _inner(event)
        candidate = _first_candidate(inner)
        self.usage = _usage(inner) or self.usage
        self.finish_reason = _finish_reason(candidate) or self.finish_reason
        return "".join(_texts(candidate))
