"""The supervisor's side of the fork server (worker/forkserver.py) workers are started from.

`ForkServer` launches the server on first use with a scrubbed environment (workers hold no secrets: ENV_ALLOWED)
in its own session, talks to it over a private socketpair (no listener: nothing else can connect, nothing is left
in /tmp), and restarts it when it has died, without touching the workers already running. `ForkServer.start`
returns a `WorkerProcess`: the worker's pid, a pidfd that becomes readable when it exits (the kernel's word, so it
holds even if the fork server dies) and the pipe its exit status arrives on.
"""

from __future__ import annotations

import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Callable, Mapping

import msgspec

from worker import protocol

# PATH and the locale for the interpreter; PYTHONPATH/PYTHONHOME if the supervisor runs with them; TMPDIR for
# tempfile. HOME, credentials, tokens and everything else stay in the supervisor.
ENV_ALLOWED = re.compile(r"PATH|LANG|LANGUAGE|LC_[A-Z_]+|TZ|TMPDIR|PYTHONPATH|PYTHONHOME")
STARTUP_TIMEOUT_S = 60.0  # importing wasmtime on a loaded 2-core machine
REQUEST_TIMEOUT_S = 5.0  # one fork; a server that takes longer (stopped, wedged) is replaced
_STATUS = struct.Struct("i")


class ForkServerError(Exception):
    """The fork server could not be started or could not start a worker."""


def scrubbed_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if ENV_ALLOWED.fullmatch(name)}


def entry_name(entry: Callable[[bytes], None]) -> str:
    """`module:qualname` of a module-level function (what the fork server imports in the new worker)."""
    module, qualname = getattr(entry, "__module__", None), getattr(entry, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise ForkServerError(f"a worker entry must be a module-level function of an importable module: {entry!r}")
    return f"{module}:{qualname}"


def _readable(fd: int, timeout_s: float | None) -> bool:
    """poll(), not select(): a daemon with many workers holds descriptors above select's limit of 1024."""
    if fd < 0:
        raise ValueError("closed descriptor")
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout_s is None else max(0, math.ceil(timeout_s * 1000))))


class WorkerProcess:
    """One worker forked by the fork server (the subset of multiprocessing.Process the pool uses)."""

    def __init__(self, pid: int, pidfd: int, status_fd: int) -> None:
        self.pid = pid
        self.sentinel = pidfd  # readable once the process has exited
        self._status_fd = status_fd
        self.exitcode: int | None = None
        self._exited = False
        self._lock = threading.Lock()  # pool.status() may ask while the calling thread joins

    def is_alive(self) -> bool:
        return not self._wait(0)

    def join(self, timeout: float | None = None) -> None:
        self._wait(timeout)

    def kill(self) -> None:
        if not self._exited and self.sentinel >= 0:
            try:
                signal.pidfd_send_signal(self.sentinel, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for fd in (self.sentinel, self._status_fd):
            if fd >= 0:
                os.close(fd)
        self.sentinel = self._status_fd = -1

    def _wait(self, timeout: float | None) -> bool:
        """True once the process has exited (its exit status read, if the fork server still reports it)."""
        if self._exited:
            return True
        try:
            if not _readable(self.sentinel, timeout):
                return False
        except (ValueError, OSError):  # closed meanwhile by another thread
            return True
        with self._lock:
            if not self._exited:
                # The fork server writes the status when it reaps the process, a moment after the pidfd fires.
                try:
                    if _readable(self._status_fd, 1.0):
                        data = os.read(self._status_fd, _STATUS.size)
                        if len(data) == _STATUS.size:
                            (self.exitcode,) = _STATUS.unpack(data)
                except (ValueError, OSError):
                    pass
                self._exited = True
        return True


class ForkServer:
    """One fork server process, started on first use and again whenever it has died. Thread-safe."""

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._environ = scrubbed_environment(os.environ if environ is None else environ)
        self._request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._ready = False

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def launch(self) -> None:
        """Start the server if none runs, without waiting for it (it imports while the caller does other work)."""
        with self._lock:
            self._launch_locked()

    def start(self, entry: Callable[[bytes], None], spec: bytes, module_fd: int | None = None) -> WorkerProcess:
        """Fork a worker that calls `entry(spec)`, with `module_fd` (if any) at protocol.MODULE_FD."""
        request = protocol.encode(protocol.ForkRequest(entry=entry_name(entry), spec=spec,
                                                       with_module_fd=module_fd is not None))
        if len(request) > protocol.MAX_FORK_REQUEST_BYTES:
            raise ForkServerError(f"a worker spec of {len(request)} bytes is too large")
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._start_locked(request, module_fd)
                except (OSError, ConnectionError) as exc:
                    # It died, was killed or is wedged: the next attempt starts a new one. Killed first, so that
                    # it cannot take the running workers with it (it ends them when our end closes).
                    self._stop_locked(kill_first=True)
                    if attempt == 2:
                        raise ForkServerError(f"the fork server is not working: {exc}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._stop_locked()

    def _start_locked(self, request: bytes, module_fd: int | None) -> WorkerProcess:
        self._launch_locked()
        assert self._control is not None
        if not self._ready:
            self._await_reply(STARTUP_TIMEOUT_S)
            self._ready = True
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        try:
            fds = [status_w] if module_fd is None else [status_w, module_fd]
            self._control.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        try:
            reply, pidfd = self._await_reply(self._request_timeout_s)
        except BaseException:
            os.close(status_r)
            raise
        if reply.error or pidfd is None:
            os.close(status_r)
            if pidfd is not None:
                os.close(pidfd)
            raise ForkServerError(reply.error or "the fork server sent no process descriptor")
        return WorkerProcess(reply.pid, pidfd, status_r)

    def _await_reply(self, timeout_s: float) -> tuple[protocol.ForkReply, int | None]:
        assert self._control is not None
        if not _readable(self._control.fileno(), timeout_s):
            raise ConnectionError(f"no answer from the fork server within {timeout_s:g} s")
        data, ancdata, _flags, _addr = self._control.recvmsg(4096, socket.CMSG_SPACE(_STATUS.size))
        fds = [fd for level, kind, payload in ancdata if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
               for fd in struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])]
        if not data:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("the fork server exited")
        try:
            reply = msgspec.msgpack.decode(data, type=protocol.ForkReply)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            for fd in fds:
                os.close(fd)
            raise ConnectionError(f"the fork server sent an invalid reply: {exc}") from None
        for extra in fds[1:]:
            os.close(extra)
        if fds:
            os.set_inheritable(fds[0], False)  # SCM_RIGHTS descriptors arrive without close-on-exec
        return reply, (fds[0] if fds else None)

    def _launch_locked(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = (f"import sys; sys.path[:] = {sys.path!r}; "
                       f"from worker.forkserver import main; main({theirs.fileno()})")
            self._process = subprocess.Popen(
                [sys.executable, "-c", command], pass_fds=[theirs.fileno()], env=self._environ,
                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._control = ours
        self._ready = False

    def _stop_locked(self, *, kill_first: bool = False) -> None:
        if kill_first and self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._control is not None:
            self._control.close()  # the server exits when it reads EOF
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(2.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._ready = False
