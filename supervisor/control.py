"""The daemon's control socket: a unix stream socket in the 0700 runtime dir, length-prefixed msgpack frames.

Who may drive the daemon (docs/security.md, "Control socket"): a process of the daemon's own user (SO_PEERCRED
uid) that is not a worker, the fork server or anything they started (SO_PEERCRED pid, its ancestors and session),
and that can read the token file the daemon writes next to the socket (0600 in the 0700 runtime dir, which
landlock keeps out of a worker's reach). The first frame of a connection must be `Hello` with that token. The CLI
uses `DaemonClient` exactly like an embedded `Supervisor`.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any, Callable

import msgspec
import psutil

from supervisor.supervisor import CallRefused, CallResult

log = logging.getLogger(__name__)

SOCKET_NAME = "supervisor.sock"
TOKEN_NAME = "control.token"
TOKEN_BYTES = 32
HELLO_TIMEOUT_S = 5.0
PID_NAME = "supervisor.pid"
MAX_FRAME = 16 * 1024 * 1024
_LENGTH = struct.Struct("!I")


class ControlError(Exception):
    """The daemon could not be reached or answered with a protocol error."""


class Hello(msgspec.Struct, forbid_unknown_fields=True):
    """The first frame of every control connection."""

    token: bytes


class Request(msgspec.Struct, forbid_unknown_fields=True):
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


def write_token(runtime_dir: Path) -> bytes:
    """A fresh control token in `runtime_dir/control.token` (0600, created anew: never an existing file's inode)."""
    token = secrets.token_bytes(TOKEN_BYTES)
    path = token_path(runtime_dir)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token.hex())
    return token


def read_token(runtime_dir: Path) -> bytes:
    path = token_path(runtime_dir)
    try:
        return bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        raise ControlError(f"cannot read the supervisor daemon's control token {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ControlError(f"the supervisor daemon's control token {path} is malformed; restart the daemon") from None


def worker_lineage(pid: int, worker_pids: set[int]) -> int | None:
    """The worker (or fork server) pid that `pid` is, descends from or shares a session with; None if none.
    A process that cannot be inspected (gone already) counts as a worker: refuse what cannot be checked."""
    if not worker_pids:
        return None
    try:
        if os.getsid(pid) in worker_pids:
            return os.getsid(pid)
        process = psutil.Process(pid)
        for member in (process, *process.parents()):
            if member.pid in worker_pids:
                return member.pid
    except (OSError, psutil.Error):
        return pid
    return None


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
    """Serves `Request`s with `handler`, one thread per connection (calls to different plugins run in parallel).
    The handler also gets the connection's fd: it turns readable when the client goes away (Ctrl-C), which
    cancels the call it made (docs/limits.md). Connection threads do not hold up the daemon's exit: the pool
    ends their calls when it closes."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        path: Path,
        handler: Callable[[Request, int], Reply],
        *,
        token: bytes,
        refuse_peer: Callable[[int], str | None] = lambda pid: None,
        on_refused: Callable[[int, str], None] = lambda pid, why: None,
    ) -> None:
        """`refuse_peer(pid)` says why a connecting process may not be a client (None = it may); `on_refused` is
        told about every refused connection (the daemon audits them)."""
        self.handle_request_fn = handler
        self.token = token
        self.refuse_peer = refuse_peer
        self.on_refused = on_refused
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
        server: ControlServer = self.server  # type: ignore[assignment]
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return self._refuse(server, pid, f"uid {uid} is not the daemon's")
        why = server.refuse_peer(pid)
        if why is not None:
            return self._refuse(server, pid, why)
        try:
            sock.settimeout(HELLO_TIMEOUT_S)
            try:
                hello = msgspec.msgpack.decode(_recv(sock), type=Hello)
            except (ControlError, msgspec.ValidationError, msgspec.DecodeError):
                hello = None
            if hello is None or not hmac.compare_digest(hello.token, server.token):
                return self._refuse(server, pid, "no valid control token")
            sock.settimeout(None)
            _send(sock, msgspec.msgpack.encode(Reply(ok=True, pid=os.getpid())))
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
                    reply = server.handle_request_fn(request, sock.fileno())
                _send(sock, msgspec.msgpack.encode(reply))
        except OSError:
            return

    def _refuse(self, server: ControlServer, pid: int, why: str) -> None:
        log.warning("refused a control connection from pid %d: %s", pid, why)
        server.on_refused(pid, why)
        try:
            _send(self.request, msgspec.msgpack.encode(Reply(ok=False, error=f"control connection refused: {why}")))
        except OSError:
            pass


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
