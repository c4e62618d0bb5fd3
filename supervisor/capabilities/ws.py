"""tark:ws — websocket client connections with tark's JSON shapes (tark-core-abi.md §1.3).

Unlike tark (weaknesses 18-20): handles belong to one plugin (a table per PluginHost), recv waits on that one
socket only, close really closes the connection, an oversize message is reported as `message_too_large`
(connect, send and close never block on another socket), the URL goes through the same policy and address
checks as http, and connect completes (handshake included) before a handle is returned.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.asyncio.client import ClientConnection, connect

from policy.grants import EffectiveGrants, HttpAccess
from policy.limits import Limits
from policy.patterns import parse_url_target
from supervisor.capabilities.audit import AuditLog
from supervisor.capabilities.http import InvalidHeader, parse_header_pairs, validate_header_pairs
from supervisor.capabilities.netguard import connect_checked_async, literal_hosts
from supervisor.capabilities.outcome import DENIED, Outcome, tark_json

UNKNOWN_HANDLE = {"error": "Unknown websocket handle", "ok": False}
SEND_FAILED = {"error": "WebSocket send failed", "ok": False}
_HANDSHAKE_HEADERS = frozenset({"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                                "sec-websocket-extensions", "sec-websocket-accept"})
_CLOSE_TIMEOUT_S = 2.0
_CLOSE_ALL_S = 0.5


def _recv_shape(*, closed: bool = False, error: str | None = None, message: str | None = None) -> dict[str, Any]:
    return {"closed": closed, "error": error, "message": message, "ok": True}


@attrs.frozen
class WsConfig:
    grants: Callable[[], EffectiveGrants]  # the plugin's current effective grants (policy/grants.py)
    max_handles: int
    connect_timeout_s: float
    recv_max_bytes: int
    max_frame_bytes: int
    max_recv_timeout_s: float
    max_result_bytes: int
    max_queued_messages: int

    @classmethod
    def derive(cls, grants: Callable[[], EffectiveGrants], limits: Limits) -> "WsConfig":
        return cls(
            grants=grants,
            max_handles=limits.ws_max_handles,
            connect_timeout_s=limits.ws_connect_timeout_s,
            recv_max_bytes=limits.ws_recv_max_bytes,
            max_frame_bytes=limits.ws_max_frame_bytes,
            max_recv_timeout_s=limits.ws_max_recv_timeout_s,
            max_result_bytes=limits.max_result_bytes,
            max_queued_messages=limits.ws_max_queued_messages,
        )


@attrs.define
class _Socket:
    conn: ClientConnection
    recv_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    closed_reason: str | None = None
    close_reported: bool = False


class WsCapability:
    """Host implementation of tark:ws for one plugin. Its operations are coroutines run on the plugin host's
    IoLoop, so a call's owner can cancel a connect or a recv in flight (docs/limits.md). Each connection keeps at
    most `max_queued_messages` received messages; beyond that websockets stops reading the socket (TCP
    backpressure), so a server pushing messages cannot grow the supervisor's memory."""

    def __init__(self, config: WsConfig, audit: AuditLog, log: logging.Logger) -> None:
        self.config = config
        self._audit = audit
        self._log = log
        self._sockets: dict[int, _Socket] = {}
        self._ids = itertools.count(1)

    async def connect(self, url: str, headers: str) -> Outcome:
        grants = self.config.grants()
        decision = grants.check(HttpAccess(url))
        if not decision.allowed:
            self._audit.denied("http", url, f"websocket: {decision.reason}")
            return Outcome(DENIED)
        self._audit.allowed("http", url, f"websocket: {decision.reason}")
        scheme = urlsplit(url).scheme.lower()
        explicit_scheme = decision.pattern is not None and "://" in decision.pattern
        if scheme not in ("ws", "wss") or (scheme == "ws" and not explicit_scheme):
            return _json({"error": "Only wss:// URLs are allowed", "ok": False})
        if len(self._sockets) >= self.config.max_handles:
            return _json({"error": f"too many open websockets (limit {self.config.max_handles}); close one",
                          "ok": False})
        pairs = []
        for name, value in parse_header_pairs(headers):
            try:
                validate_header_pairs([(name, value)])
            except InvalidHeader:
                continue  # tark skips invalid pairs
            if name.lower() not in _HANDSHAKE_HEADERS:
                pairs.append((name, value))
        target = parse_url_target(url)
        url = target.url  # the host name exactly as checked (IDNA 2008 form)
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                sock = await connect_checked_async(target.host, target.port,
                                                   literal_hosts(grants.literal_http_hosts))
        except (OSError, TimeoutError) as exc:
            return _json({"error": f"WebSocket connect failed: {exc or 'timed out'}", "ok": False})
        try:
            conn = await connect(url, sock=sock, additional_headers=pairs, user_agent_header=None, proxy=None,
                                 open_timeout=self.config.connect_timeout_s, close_timeout=_CLOSE_TIMEOUT_S,
                                 max_size=self.config.max_frame_bytes, max_queue=self.config.max_queued_messages)
        except (OSError, WebSocketException, TimeoutError) as exc:
            sock.close()
            return _json({"error": f"WebSocket connect failed: {exc}", "ok": False})
        except BaseException:
            sock.close()
            raise
        handle = next(self._ids)
        self._sockets[handle] = _Socket(conn)
        return _json({"handle": handle, "ok": True})

    async def send(self, handle: int, data: str) -> Outcome:
        entry = self._sockets.get(handle)
        if entry is None:
            return _json(UNKNOWN_HANDLE)
        if entry.closed_reason is not None:
            return _json(SEND_FAILED)
        try:
            await entry.conn.send(data)
        except (ConnectionClosed, OSError):
            return _json(SEND_FAILED)
        return _json({"ok": True})

    async def recv(self, handle: int, timeout_ms: int, max_bytes: int) -> Outcome:
        entry = self._sockets.get(handle)
        if entry is None:
            return _json(UNKNOWN_HANDLE)
        timeout = min(max(timeout_ms, 0) / 1000, self.config.max_recv_timeout_s)
        max_bytes = min(max(max_bytes, 0), self.config.recv_max_bytes)
        async with entry.recv_lock:
            return _json(await self._recv(entry, timeout, max_bytes))

    async def close(self, handle: int) -> Outcome:
        entry = self._sockets.pop(handle, None)
        if entry is not None:
            await entry.conn.close()
        return _json({"ok": True})

    async def close_all(self) -> None:
        """Close every connection together; a server that does not finish the closing handshake within
        _CLOSE_ALL_S is cut off (this runs when a call is cancelled: the plugin must be usable at once)."""
        entries = list(self._sockets.values())
        self._sockets.clear()
        if not entries:
            return
        closing = [asyncio.ensure_future(entry.conn.close()) for entry in entries]
        _done, pending = await asyncio.wait(closing, timeout=_CLOSE_ALL_S)
        for task in pending:
            task.cancel()
        for entry in entries:
            entry.conn.transport.abort()

    async def _recv(self, entry: _Socket, timeout: float, max_bytes: int) -> dict[str, Any]:
        if entry.closed_reason is not None:
            if entry.close_reported:
                return _recv_shape(closed=True, error="recv_failed")
            entry.close_reported = True
            return _recv_shape(closed=True, error=entry.closed_reason)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        message = await entry.conn.recv()  # cancelling recv loses no message (websockets)
                    except ConnectionClosed as exc:
                        entry.closed_reason = _close_reason(exc)
                        entry.close_reported = True
                        return _recv_shape(closed=True, error=entry.closed_reason)
                    if isinstance(message, bytes):
                        continue  # tark never delivers binary frames
                    shape = _recv_shape(message=message)
                    if (len(message.encode("utf-8")) > max_bytes
                            or len(tark_json(shape)) > self.config.max_result_bytes):
                        return _recv_shape(error="message_too_large")
                    return shape
        except TimeoutError:
            return _recv_shape()


def _close_reason(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"close:{exc.rcvd.code} {exc.rcvd.reason}"
    return "eof"


def _json(value: dict[str, Any]) -> Outcome:
    return Outcome.written(tark_json(value))
