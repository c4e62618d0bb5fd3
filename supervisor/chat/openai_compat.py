"""The OpenAI-compatible model API client of auth-only providers (`api_mode = "openai_compat"`).

The supervisor, not the plugin, sends the user's conversation and the plugin's token to an endpoint the plugin
chose. So the endpoint must be one the plugin's effective http grants allow (policy/grants.py: declared, approved
and allowed by the admin policy), the
connection goes through netguard (internal addresses only when a pattern names them literally), redirects are
not followed, and time and response size are bounded.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import attrs
import httpx

from policy.grants import EffectiveGrants, HttpAccess
from policy.patterns import parse_url_target
from supervisor.capabilities.http import InvalidHeader, validate_header_pairs
from supervisor.capabilities.netguard import checked_transport, literal_hosts
from supervisor.chat.types import ChatError, ChatReply, Message, Usage, excerpt, json_kind

COMPLETIONS_PATH = "/chat/completions"


@attrs.frozen
class ModelApiLimits:
    connect_timeout_s: float = 10.0
    total_timeout_s: float = 120.0
    max_response_bytes: int = 8 * 1024 * 1024


def completions_url(endpoint: str) -> httpx.URL:
    """`<endpoint>/chat/completions`, or the endpoint itself when it already ends so."""
    try:
        url = httpx.URL(endpoint.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise ChatError(f"The model API endpoint {endpoint[:200]!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ChatError(f"The model API endpoint {endpoint[:200]!r} is not an http(s) URL")
    path = url.path.rstrip("/")
    if not path.endswith(COMPLETIONS_PATH):
        path += COMPLETIONS_PATH
    return url.copy_with(path=path)


class OpenAICompatClient:
    """POSTs `{"model", "messages"}` to a plugin's endpoint with its token; one client per chat session."""

    def __init__(self, plugin: str, grants: Callable[[], EffectiveGrants],
                 limits: ModelApiLimits = ModelApiLimits()) -> None:
        self._plugin = plugin
        self._grants = grants
        self._limits = limits
        self._client = httpx.Client(
            transport=checked_transport(lambda: literal_hosts(grants().literal_http_hosts), 2),
            trust_env=False, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def allowed_url(self, endpoint: str) -> httpx.URL:
        url = completions_url(endpoint)
        decision = self._grants().check(HttpAccess(str(url)))
        if not decision.allowed:
            raise ChatError(
                f"Plugin '{self._plugin}' asks tark to send the conversation and its token to {url}, which its "
                f"http grants do not allow ({decision.reason}); the plugin's manifest must list that host, and "
                f"it must be approved (tark plugin permissions {self._plugin})")
        return httpx.URL(parse_url_target(str(url)).url)  # the host exactly as checked (IDNA 2008 form)

    def complete(self, *, endpoint: str, token: str, headers: dict[str, str], model: str,
                 messages: list[Message]) -> dict[str, Any]:
        """The decoded JSON of a 200 answer; every other outcome is a ChatError."""
        url = self.allowed_url(endpoint)
        pairs = list(headers.items())
        try:
            validate_header_pairs(pairs + [("Authorization", f"Bearer {token}")])
        except InvalidHeader as exc:
            raise ChatError(f"Plugin '{self._plugin}' gave credentials that cannot be sent: {exc}") from None
        pairs = [(n, v) for n, v in pairs if n.lower() not in ("authorization", "content-type")]
        pairs += [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
        body = json.dumps({"model": model, "messages": [m.to_json() for m in messages]}, ensure_ascii=False)
        limits = self._limits
        deadline = time.monotonic() + limits.total_timeout_s
        timeout = httpx.Timeout(limits.total_timeout_s, connect=limits.connect_timeout_s)
        try:
            request = self._client.build_request("POST", url, headers=pairs, content=body.encode(), timeout=timeout)
            response = self._client.send(request, stream=True)
            try:
                data = self._read(response, deadline)
                status = response.status_code
            finally:
                response.close()
        except httpx.TimeoutException:
            raise ChatError(f"The model API at {url} did not answer within {limits.total_timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ChatError(f"The model API request to {url} failed: {exc or type(exc).__name__}") from None
        text = data.decode("utf-8", errors="replace")
        if status != 200:
            raise ChatError(f"Model API returned {status}: {excerpt(text) or '(empty body)'}")
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ChatError(f"Failed to parse chat response JSON from the model API: {str(exc)[:200]}") from None
        if not isinstance(decoded, dict):
            raise ChatError(f"Failed to parse chat response JSON from the model API: expected an object, "
                            f"got {json_kind(decoded)}")
        return decoded

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        cap = self._limits.max_response_bytes
        declared = response.headers.get("content-length", "")
        body = bytearray()
        if not (declared.isdigit() and int(declared) > cap):
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > cap:
                    break
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("total timeout reached while reading the body")
        if len(body) > cap or (declared.isdigit() and int(declared) > cap):
            raise ChatError(f"The model API response is larger than {cap} bytes; refusing to read it")
        return bytes(body)


def parse_completion(data: dict[str, Any], *, model: str, worker_pid: int | None) -> ChatReply:
    """`choices[0].message.content`, `finish_reason` and `usage` of an OpenAI chat completion."""
    bad = "Failed to parse chat response JSON from the model API: "
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ChatError(bad + "'choices' must be a non-empty array of objects")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ChatError(bad + "'choices[0].message' must be an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ChatError(bad + "'choices[0].message.content' must be a string")
    finish_reason = choice.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise ChatError(bad + "'choices[0].finish_reason' must be a string")
    usage = None
    raw = data.get("usage")
    if isinstance(raw, dict) and all(_count(raw.get(k)) for k in ("prompt_tokens", "completion_tokens")):
        usage = Usage(raw["prompt_tokens"], raw["completion_tokens"])
    if not (content or "").strip():
        raise ChatError(f"The model API returned an empty response for model '{model}'")
    return ChatReply(text=content, usage=usage, finish_reason=finish_reason, worker_pid=worker_pid)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
