"""The client half of the daemon's control socket: frames, messages and `DaemonClient`.

The thin CLI (docs/performance.md, "Thin client") reaches a running daemon through this module alone, so it
imports only the standard library and msgspec. The server half and who may connect are in supervisor/control.py.
"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Any

import msgspec

from supervisor.call_api import CallRefused, CallResult

SOCKET_NAME = "supervisor.sock"
TOKEN_NAME = "control.token"
PID_NAME = "supervisor.pid"
MAX_FRAME = 16 * 1024 * 1024
_LENGTH = struct.Struct("!I")


class ControlError(Exception):
    """The daemon could not be reached or answered with a protocol error."""


class Hello(msgspec.Struct, forbid_unknown_fields=True):
    """The first frame of every control connection."""

    token: bytes


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    # omit_defaults: a field a command does not use is not sent, so a daemon started before a field was added
    # still understands every request that does not need it.
    op: str  # "ping" | "call" | "exports" | "end_instance" | "reset" | "stop_worker" | "status" | "shutdown" | channel ops | "channel_*"
    plugin: str = ""
    export: str = ""
    args: list[str] = []
    timeout_s: float | None = None
    instance: str = "fresh"
    poll_ms: int | None = None  # channel_start: the poll interval
    project: str = ""  # channel_start: the directory whose .tark/plugins/<id>/oauth.json is looked at first
    passphrase: str = ""  # channel_start: opens an encrypted credentials file (docs/channels.md, "Credentials")


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


def token_path(runtime_dir: Path) -> Path:
    return runtime_dir / TOKEN_NAME


def read_token(runtime_dir: Path) -> bytes:
    path = token_path(runtime_dir)
    try:
        return bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise ControlError(f"cannot read the supervisor daemon's control token {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ControlError(f"the supervisor daemon's control token {path} is malformed; restart the daemon") from None


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
        try:
            try:
                _send(self._sock, msgspec.msgpack.encode(Hello(token=read_token(runtime_dir))))
            except OSError:
                pass  # a refused client: the daemon has closed its end, its reply says why
            welcome = msgspec.msgpack.decode(_recv(self._sock), type=Reply)
        except ControlError:
            self._sock.close()
            raise
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._sock.close()
            raise ControlError(f"the supervisor daemon at {self.path} did not accept this client: {exc}") from None
        if not welcome.ok:
            self._sock.close()
            raise ControlError(welcome.error)
        self._sock.settimeout(None)
        self._lock = threading.Lock()

    def request(self, request: Request) -> Reply:
        payload = msgspec.msgpack.encode(request)
        if len(payload) > MAX_FRAME:  # refused here: the daemon would drop the connection
            raise CallRefused(f"the request is {len(payload)} bytes, over the control socket's {MAX_FRAME}-byte"
                              " limit (see docs/limits.md)")
        with self._lock:
            try:
                _send(self._sock, payload)
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
        return msgspec.convert(reply.result, CallResult)

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
        return self._checked(Request(op="ping")).pid

    def shutdown(self) -> None:
        self.request(Request(op="shutdown"))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def running_client(runtime_dir: Path) -> DaemonClient | None:
    """A client of the running daemon, or None when no daemon answers."""
    if not socket_path(runtime_dir).exists():
        return None
    try:
        return DaemonClient(runtime_dir)  # its welcome is the daemon's answer: no ping needed
    except ControlError:
        return None
