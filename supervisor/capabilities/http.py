"""tark:http — get/post with tark's JSON shapes (tark-core-abi.md §1.2), without tark's holes.

Differences from tark (weaknesses 3, 13, 14): scheme and port are part of the policy; redirects are followed
here and every hop is re-checked; URLs with user info are refused; names resolving to internal addresses are
refused unless the pattern names the address (netguard); the body and the result are size-capped; no proxy
from the environment; credentials are dropped on cross-origin redirects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from typing import Any, Callable

import attrs
import httpx

from policy.grants import EffectiveGrants, HttpAccess
from policy.limits import Limits
from policy.patterns import parse_url_target
from supervisor.capabilities.audit import AuditLog
from supervisor.capabilities.netguard import checked_async_transport, literal_hosts
from supervisor.capabilities.outcome import DENIED, Outcome, tark_json

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# Set by the runtime: a guest choosing them could smuggle requests or reach another virtual host.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class InvalidHeader(ValueError):
    pass


def parse_header_pairs(text: str) -> list[tuple[str, str]]:
    """The guest's `[[name, value], ...]`; any other shape means no headers (as in tark)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return []
    if not isinstance(data, list):
        return []
    pairs = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            return []
        pairs.append((item[0], item[1]))
    return pairs


def validate_header_pairs(pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        if not _TOKEN.match(name):
            raise InvalidHeader(f"invalid header name {name[:100]!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise InvalidHeader(f"header {name!r} is set by the host and cannot be given")
        if not _VALUE.match(value):
            raise InvalidHeader(f"invalid value for header {name!r}: only visible ASCII and tabs are allowed")


def _visible(value: bytes) -> str:
    return value.decode("ascii") if _VALUE.match(value.decode("latin-1")) else ""


@attrs.frozen
class HttpConfig:
    grants: Callable[[], EffectiveGrants]  # the plugin's current effective grants (policy/grants.py)
    connect_timeout_s: float
    total_timeout_s: float
    max_body_bytes: int
    max_redirects: int
    max_concurrent: int
    max_result_bytes: int

    @classmethod
    def derive(cls, grants: Callable[[], EffectiveGrants], limits: Limits) -> "HttpConfig":
        return cls(
            grants=grants,
            connect_timeout_s=limits.http_connect_timeout_s,
            total_timeout_s=limits.http_total_timeout_s,
            max_body_bytes=limits.http_max_response_body_bytes,
            max_redirects=limits.http_max_redirects,
            max_concurrent=limits.http_max_concurrent,
            max_result_bytes=limits.max_result_bytes,
        )


class HttpCapability:
    """Host implementation of tark:http for one plugin: one pooled async client, a concurrency cap.

    `get`/`post` are coroutines run on the plugin host's IoLoop, so the call that waits for one can cancel it
    (its deadline passed, Ctrl-C): cancelling closes the connection in flight (docs/limits.md)."""

    def __init__(self, config: HttpConfig, audit: AuditLog, log: logging.Logger) -> None:
        self.config = config
        self._audit = audit
        self._log = log
        self._slots: asyncio.Semaphore | None = None  # made on the loop
        self._client: httpx.AsyncClient | None = None  # made on first use: building one costs ~30 ms (TLS context)

    def _pooled_client(self) -> httpx.AsyncClient:
        if self._client is None:
            client = httpx.AsyncClient(
                transport=checked_async_transport(self._literal_hosts, self.config.max_concurrent),
                trust_env=False,
                follow_redirects=False,
            )
            # tark sends no User-Agent and asks for no compression (reqwest defaults); keep `Accept: */*`.
            for name in ("user-agent", "accept-encoding"):
                client.headers.pop(name, None)
            self._client = client
        return self._client

    def _literal_hosts(self) -> frozenset[str]:
        return literal_hosts(self.config.grants().literal_http_hosts)

    async def get(self, url: str, headers: str) -> Outcome:
        return await self._request("GET", url, None, headers)

    async def post(self, url: str, body: str, headers: str) -> Outcome:
        return await self._request("POST", url, body.encode("utf-8"), headers)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _request(self, method: str, url: str, body: bytes | None, headers: str) -> Outcome:
        decision = self.config.grants().check(HttpAccess(url))
        if not decision.allowed:
            self._audit.denied("http", url, decision.reason)
            return Outcome(DENIED)
        self._audit.allowed("http", url, decision.reason)
        url = parse_url_target(url).url  # send to the host name exactly as it was checked (IDNA 2008 form)
        pairs = parse_header_pairs(headers)
        try:
            validate_header_pairs(pairs)
        except InvalidHeader as exc:
            return self._answer({"error": str(exc)})
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_concurrent)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.config.total_timeout_s)
        except asyncio.TimeoutError:
            return self._answer({"error": f"too many concurrent http requests (limit {self.config.max_concurrent})"})
        try:
            result = await self._fetch(method, url, body, pairs)
        finally:
            self._slots.release()
        return self._answer(result)

    def _answer(self, result: dict[str, Any]) -> Outcome:
        data = tark_json(result)
        if len(data) > self.config.max_result_bytes:
            data = tark_json({"error": f"response too large: {len(data)} bytes exceed the "
                                       f"{self.config.max_result_bytes}-byte result limit"})
        return Outcome.written(data)

    async def _fetch(self, method: str, url: str, body: bytes | None,
                     pairs: list[tuple[str, str]]) -> dict[str, Any]:
        deadline = time.monotonic() + self.config.total_timeout_s
        for _hop in range(self.config.max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"error": f"request timed out after {self.config.total_timeout_s:g} s"}
            timeout = httpx.Timeout(remaining, connect=min(self.config.connect_timeout_s, remaining))
            try:
                client = self._pooled_client()
                request = client.build_request(method, url, headers=pairs, content=body, timeout=timeout)
                response = await client.send(request, stream=True)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                return {"error": f"request to {url} failed: {_describe(exc)}"}
            try:
                location = response.headers.get("location")
                if response.status_code not in _REDIRECT_CODES or location is None:
                    return await self._read(response, deadline)
                try:
                    next_url = str(response.url.join(location).copy_with(fragment=None))
                except (httpx.InvalidURL, ValueError) as exc:
                    return {"error": f"invalid redirect location {location[:200]!r}: {exc}"}
            finally:
                await response.aclose()
            decision = self.config.grants().check(HttpAccess(next_url))
            if not decision.allowed:
                self._audit.denied("http", next_url, f"redirect from {url}: {decision.reason}")
                return {"error": f"redirect to {next_url} not allowed"}
            self._audit.allowed("http", next_url, f"redirect from {url}: {decision.reason}")
            next_url = parse_url_target(next_url).url
            if response.status_code == 303 and method != "HEAD" or (
                    response.status_code in (301, 302) and method == "POST"):
                method, body = "GET", None
                pairs = [(n, v) for n, v in pairs if n.lower() != "content-type"]
            if _origin(httpx.URL(next_url)) != _origin(httpx.URL(url)):
                pairs = [(n, v) for n, v in pairs if n.lower() not in _CREDENTIAL_HEADERS]
            url = next_url
        return {"error": f"too many redirects (more than {self.config.max_redirects})"}

    async def _read(self, response: httpx.Response, deadline: float) -> dict[str, Any]:
        cap = self.config.max_body_bytes
        too_big = {"error": f"response body exceeds {cap} bytes"}
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            return too_big
        body = bytearray()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > cap:
                        return too_big
        except (httpx.HTTPError, TimeoutError) as exc:
            # tark's shape for a failed body read: status and headers with an empty body.
            self._log.warning("http body of %s could not be read: %s", response.url,
                              _describe(exc) if isinstance(exc, httpx.HTTPError) else "total timeout reached")
            body = bytearray()
        return {
            "body": body.decode("utf-8", errors="replace"),
            "headers": [[name.decode("latin-1").lower(), _visible(value)] for name, value in response.headers.raw],
            "status": response.status_code,
        }


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException) and not str(exc):
        return "timed out"  # httpx's async timeouts carry no message
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None:  # anyio says "All connection attempts failed"; the reason is further down
        if isinstance(cause, OSError) and cause.errno:
            return f"{text} ({os.strerror(cause.errno)})"
        cause = cause.__cause__ or cause.__context__
    return text
