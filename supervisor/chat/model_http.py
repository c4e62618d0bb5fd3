"""HTTP to a model API for auth-only chats: one POST of a JSON body, answered with JSON or an event stream.

The supervisor sends the user's conversation and a plugin's token here, and reads what a remote server sends
back, so every part of the exchange is bounded (docs/chat.md "Security of the model API call"):

* connections go through netguard (internal addresses only when named literally), no proxy from the
  environment, no redirects, no content encoding asked for (no decompression bombs);
* one deadline for the whole exchange: a watchdog shuts the socket down when it passes, so neither a silent
  server nor one dripping an endless stream can hold the chat past it;
* at most `max_response_bytes` are read, and an event stream line may not pass `max_line_bytes`;
* the request carries exactly the headers the caller gives (plus Host and Content-Length), as tark's does.

Ctrl-C raises KeyboardInterrupt out of the blocking read; the response is closed on the way out.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any, Callable, Iterator

import attrs
import httpx

from supervisor.capabilities.http import InvalidHeader, validate_header_pairs
from supervisor.capabilities.netguard import checked_transport
from supervisor.chat.sse import SseDecoder, SseError
from supervisor.chat.types import ChatError, ModelApiLimits, excerpt, json_kind  # noqa: F401 - ModelApiLimits re-exported

StatusMessage = Callable[[int, str], str]


def status_text(status: int) -> str:
    """How reqwest prints a status: `404 Not Found`."""
    reason = httpx.codes.get_reason_phrase(status)
    return f"{status} {reason}" if reason else str(status)


def llm_error(status: int, body: str) -> str:
    """tark's LlmError::from_http_status texts (src/llm/error.rs), with the body cut to one short line."""
    text = excerpt(body) or "(empty body)"
    prefix = {401: "Unauthorized", 429: "Rate limited", 400: "Bad request"}.get(status)
    if prefix is None and 500 <= status <= 599:
        prefix = "Service error"
    return f"{prefix}: {text}" if prefix else f"HTTP {status_text(status)}: {text}"


def request_headers(plugin: str, token: str, custom: dict[str, str],
                    fixed: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    """Content-Type, the bearer token, `fixed` and the plugin's custom headers, in tark's order; a header the
    plugin cannot set (or with CR/LF in it) is refused without naming the token."""
    pairs = list(custom.items())
    try:
        validate_header_pairs([("Authorization", f"Bearer {token}")])
    except InvalidHeader:
        raise ChatError(f"Plugin '{plugin}' gave credentials that cannot be sent: invalid value for header "
                        "'Authorization' (the access token must be visible ASCII)") from None
    try:
        validate_header_pairs(pairs)
    except InvalidHeader as exc:
        raise ChatError(f"Plugin '{plugin}' gave credentials that cannot be sent: {exc}") from None
    own = {"content-type", "authorization"} | {name.lower() for name, _ in fixed}
    return ([("Content-Type", "application/json"), ("Authorization", f"Bearer {token}"), *fixed]
            + [(n, v) for n, v in pairs if n.lower() not in own])


class ModelHttp:
    """One httpx client per chat session; `api` names the API in messages as tark does (`openai-compat`,
    `Cloud Code Assist`)."""

    def __init__(self, literal_hosts: Callable[[], frozenset[str]], limits: ModelApiLimits = ModelApiLimits()) -> None:
        self.limits = limits
        self._client = httpx.Client(transport=checked_transport(literal_hosts, 2), trust_env=False,
                                    follow_redirects=False)
        for name in list(self._client.headers):  # no User-Agent, Accept-Encoding, ... of httpx's own
            del self._client.headers[name]

    def close(self) -> None:
        self._client.close()

    def post_json(self, url: httpx.URL, headers: list[tuple[str, str]], body: dict[str, Any], *, api: str,
                  status_message: StatusMessage = llm_error) -> dict[str, Any]:
        """The decoded JSON object of a 2xx answer; every other outcome is a ChatError."""
        with self._exchange(url, headers, body, api, status_message) as chunks:
            data = b"".join(chunks)
        text = data.decode("utf-8", errors="replace")
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ChatError(f"Failed to parse {api} API response: {str(exc)[:200]}") from None
        if not isinstance(decoded, dict):
            raise ChatError(f"Failed to parse {api} API response: expected an object, got {json_kind(decoded)}")
        return decoded

    def post_sse(self, url: httpx.URL, headers: list[tuple[str, str]], body: dict[str, Any], *, api: str,
                 status_message: StatusMessage = llm_error) -> Iterator[str]:
        """The `data:` payloads of a 2xx event-stream answer, each as soon as its line is complete."""
        decoder = SseDecoder(self.limits.max_line_bytes)
        with self._exchange(url, headers, body, api, status_message) as chunks:
            try:
                for chunk in chunks:
                    yield from decoder.push(chunk)
                yield from decoder.finish()
            except SseError as exc:
                raise ChatError(f"The {api} API sent a malformed event stream: {exc}") from None

    @contextlib.contextmanager
    def _exchange(self, url: httpx.URL, headers: list[tuple[str, str]], body: dict[str, Any], api: str,
                  status_message: StatusMessage) -> Iterator[Iterator[bytes]]:
        limits = self.limits
        deadline = time.monotonic() + limits.total_timeout_s
        timeout = httpx.Timeout(limits.total_timeout_s, connect=min(limits.connect_timeout_s, limits.total_timeout_s))
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        late = f"Network error: Request timeout: the {api} API at {url} did not answer within " \
               f"{limits.total_timeout_s:g} s"
        try:
            request = self._client.build_request("POST", url, headers=headers, content=content, timeout=timeout)
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise ChatError(late) from None
        except httpx.HTTPError as exc:
            raise ChatError(f"Failed to send request to {api} API ({url}): {exc or type(exc).__name__}") from None
        watchdog = _Watchdog(response, deadline)
        try:
            chunks = self._bounded(response, watchdog, api)
            if not response.is_success:
                error_body = b"".join(_capped(chunks, 64 * 1024)).decode("utf-8", errors="replace")
                raise ChatError(status_message(response.status_code, error_body))
            yield chunks
        except (httpx.HTTPError, OSError) as exc:
            if watchdog.fired.is_set() or isinstance(exc, httpx.TimeoutException):
                raise ChatError(late) from None
            raise ChatError(f"Error reading the {api} API response: {exc or type(exc).__name__}") from None
        finally:
            watchdog.cancel()
            response.close()

    def _bounded(self, response: httpx.Response, watchdog: "_Watchdog", api: str) -> Iterator[bytes]:
        cap = self.limits.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise ChatError(f"The {api} API response is larger than {cap} bytes; refusing to read it")
        read = 0
        for chunk in response.iter_raw():
            if watchdog.fired.is_set():
                raise httpx.ReadTimeout("the deadline passed")
            read += len(chunk)
            if read > cap:
                raise ChatError(f"The {api} API response is larger than {cap} bytes; refusing to read it")
            yield chunk
        if watchdog.fired.is_set():  # the watchdog's shutdown looks like the end of the body
            raise httpx.ReadTimeout("the deadline passed")


def _capped(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    read = 0
    for chunk in chunks:
        yield chunk[: limit - read]
        read += len(chunk)
        if read >= limit:
            return


class _Watchdog:
    """Shuts the response's socket down at the deadline, so a read blocked in recv() returns at once.

    httpx's read timeout applies to each read, not to the whole body; closing the socket from another thread
    would not wake a blocked recv(), shutdown() does."""

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self.fired = threading.Event()
        stream = response.extensions.get("network_stream")
        self._socket = stream.get_extra_info("socket") if stream is not None else None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired.set()
        if isinstance(self._socket, socket.socket):
            with contextlib.suppress(OSError):
                # the plain socket's shutdown, also for an SSLSocket (whose own shutdown drops its SSL state)
                socket.socket.shutdown(self._socket, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
