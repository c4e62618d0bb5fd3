"""The daemon's control socket: a unix stream socket in the 0700 runtime dir, length-prefixed msgpack frames.

Access control is the file system (the directory is 0700) plus a peer-credential check: only the daemon's own
user may connect. The CLI uses `DaemonClient` exactly like an embedded `Supervisor`.
"""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any, Callable

import msgspec

from supervisor.supervisor import CallRefused, CallResult

SOCKET_NAME = "supervisor.sock"
PID_NAME = "supervisor.pid"
MAX_FRAME = 16 * 1024 * 1024
_LENGTH = struct.Struct("!I")


class ControlError(Exception):
    """The daemon could not be reached or answered with a protocol error."""


class Request(msgspec.Struct, forbid_unknown_fields=True):
    op: str  # "ping" | "call" | "exports" | "end_instance" | "reset" | "stop_worker" | "status" | "shutdown" | channel ops | "channel_*"
    plugin: str = ""
    export: str = ""
    args: list[str] = []
    timeout_s: float | None = None
    instance: str = "fresh"
    poll_ms: int | None = None  # channel_start: the poll interval


class Reply(msgspec.Struct):
    ok: bool
    error: str = ""
    refused: bool = False  # a CallRefused on the daemon side
    result: dict[str, Any] | None = None
    status: list[dict[str, Any]] | None = None
    exports: dict[str, tuple[list[str], list[str]]] | None = None
    pid: int = 0


def socket_path(runtime_dir: Path) -> Path:
    return runtime_dir / SOCKET_NAME


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _recv(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ControlError(f"control frame of {length} bytes exceeds {MAX_FRAME}")
    return _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ControlError("the supervisor daemon closed the connection")
        chunks += chunk
    return bytes(chunks)


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves `Request`s with `handler`, one thread per connection (calls to different plugins run in parallel)."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, path: Path, handler: Callable[[Request], Reply]) -> None:
        self.handle_request_fn = handler
        if path.exists() or path.is_symlink():
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            super().__init__(str(path), _Connection)
        finally:
            os.umask(old_umask)


class _Connection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return
        try:
            while True:
                try:
                    frame = _recv(sock)
                except ControlError:
                    return
                try:
                    request = msgspec.msgpack.decode(frame, type=Request)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    reply = Reply(ok=False, error=f"invalid control request: {exc}")
                else:
                    reply = self.server.handle_request_fn(request)  # type: ignore[attr-defined]
                _send(sock, msgspec.msgpack.encode(reply))
        except OSError:
            return


class DaemonClient:
    """Talks to a running daemon; offers the `Supervisor` operations the CLI uses."""

    def __init__(self, runtime_dir: Path, connect_timeout_s: float = 2.0) -> None:
        self.path = socket_path(runtime_dir)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout_s)
        try:
            self._sock.connect(str(self.path))
        except OSError as exc:
            self._sock.close()
            raise ControlError(f"no supervisor daemon at {self.path}: {exc.strerror or exc}") from None
        self._sock.settimeout(None)
        self._lock = threading.Lock()

    def request(self, request: Request) -> Reply:
        with self._lock:
            try:
                _send(self._sock, msgspec.msgpack.encode(request))
                return msgspec.msgpack.decode(_recv(self._sock), type=Reply)
            except OSError as exc:
                raise ControlError(f"lost the supervisor daemon: {exc}") from None

    def _checked(self, request: Request) -> Reply:
        reply = self.request(request)
        if not reply.ok:
            if reply.refused:
                raise CallRefused(reply.error)
            raise ControlError(reply.error)
        return reply

    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = "fresh") -> CallResult:
        reply = self._checked(Request(op="call", plugin=name, export=export, args=args, timeout_s=timeout_s,
                                      instance=instance))
        return CallResult(**reply.result)

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]:
        reply = self._checked(Request(op="exports", plugin=name))
        return {k: (list(p), list(r)) for k, (p, r) in (reply.exports or {}).items()}

    def end_instance(self, name: str, instance: str) -> None:
        self._checked(Request(op="end_instance", plugin=name, instance=instance))

    def reset(self, name: str) -> None:
        self._checked(Request(op="reset", plugin=name))

    def stop_worker(self, name: str) -> None:
        self._checked(Request(op="stop_worker", plugin=name))

    def status(self) -> list[dict]:
        reply = self.request(Request(op="status"))
        return reply.status or []

    def ping(self) -> int:
        return self.request(Request(op="ping")).pid

    def shutdown(self) -> None:
        self.request(Request(op="shutdown"))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
