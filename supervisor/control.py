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
from pathlib import Path
from typing import Callable

import msgspec
import psutil

from supervisor.control_client import (  # noqa: F401 - the client half, re-exported for the daemon's side
    MAX_FRAME, PID_NAME, SOCKET_NAME, TOKEN_NAME, ControlError, DaemonClient, Hello, Reply, Request, _recv, _send,
    read_token, socket_path, token_path,
)

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
HELLO_TIMEOUT_S = 5.0


def write_token(runtime_dir: Path) -> bytes:
    """A fresh control token in `runtime_dir/control.token` (0600, created anew: never an existing file's inode)."""
    token = secrets.token_bytes(TOKEN_BYTES)
    path = token_path(runtime_dir)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token.hex())
    return token


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
