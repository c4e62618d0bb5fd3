"""The fork server: the process workers are forked from (docs/security.md, "Fork server").

The supervisor starts it (supervisor/forkserver.py) with a scrubbed environment and one end of a SOCK_SEQPACKET
socketpair as its only channel: there is no listener anywhere, so nothing but the supervisor can talk to it. It
imports the worker's code once (this module imports worker.main: wasmtime, zmq and worker.*, nothing of the
supervisor's), does once what every worker would otherwise repeat (text codecs, the compiled seccomp program,
wasmtime's first use: docs/performance.md, "Worker start") and then, per request, forks one worker:

    supervisor -> fork server   ForkRequest + fds [status pipe write end, sealed module memfd (optional)]
    fork server -> supervisor   ForkReply(pid) + fds [pidfd of the new worker]   (or ForkReply(error=...))
    fork server -> status pipe  the worker's exit status (int32), once it has reaped it

The supervisor watches the pidfd (the kernel's word, valid even if the fork server dies) and reads the exit status
from the pipe. A worker runs in its own session (no terminal signals, its own process group), holds only stdio and
its module fd (protocol.MODULE_FD), and calls the request's entry point with the spec. The fork server exits when
the supervisor's end closes; running workers are not affected.
"""

from __future__ import annotations

import codecs
import ctypes
import gc
import importlib
import os
import resource
import select
import signal
import socket
import struct
import sys
import traceback

import msgspec
import wasmtime

import worker.main  # noqa: F401 - the preload: every worker needs it, and wasmtime + zmq with it
from worker import lockdown, protocol
from worker.lockdown import seccomp

STATUS = struct.Struct("i")
PR_SET_DUMPABLE = 4
MAX_FDS = 2


def main(control_fd: int) -> None:
    _not_dumpable()
    _prepare_shared_work()
    control = socket.socket(fileno=control_fd)
    control.set_inheritable(False)
    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select below
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor ends us by closing the socket
    status_fds: dict[int, int] = {}  # worker pid -> write end of its status pipe
    gc.freeze()  # the preloaded objects go to the permanent generation: no collector writes to shared pages
    try:
        control.send(protocol.encode(protocol.ForkReply(pid=os.getpid())))  # ready
    except OSError:
        return  # the supervisor went away while we started (Ctrl-C): nothing to serve, nothing to report
    while True:
        readable, _, _ = select.select([control, wakeup_r], [], [])
        if wakeup_r in readable:
            _drain(wakeup_r)
            _reap(status_fds)
        if control in readable:
            try:
                data, fds = _receive(control)
            except OSError:
                _end_workers(status_fds)
                return
            if not data and not fds:
                if _hung_up(control):
                    _end_workers(status_fds)
                    return  # the supervisor closed its end (or exited)
                continue  # an empty datagram
            _serve(control, data, fds, status_fds, (control.fileno(), wakeup_r, wakeup_w))


def _serve(control: socket.socket, data: bytes, fds: list[int], status_fds: dict[int, int],
           own_fds: tuple[int, ...]) -> None:
    try:
        request = msgspec.msgpack.decode(data, type=protocol.ForkRequest)
        if not fds or len(fds) != 1 + (request.with_module_fd is True):
            raise ValueError(f"{len(fds)} descriptors for a request that needs {1 + request.with_module_fd}")
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        control.send(protocol.encode(protocol.ForkReply(error=f"invalid fork request: {exc}")))
        return
    status_w, module_fd = fds[0], (fds[1] if request.with_module_fd else None)
    pid = os.fork()
    if pid == 0:
        _child(request, module_fd)  # never returns
    pidfd = os.pidfd_open(pid)
    try:
        control.sendmsg([protocol.encode(protocol.ForkReply(pid=pid))],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", pidfd))])
    finally:
        os.close(pidfd)
        if module_fd is not None:
            os.close(module_fd)
    status_fds[pid] = status_w


def _end_workers(status_fds: dict[int, int]) -> None:
    """The supervisor is gone (even killed with SIGKILL): its workers go too, at once, whatever their guest is
    doing (a spinning guest would notice the lost connection only at its CPU deadline). docs/limits.md"""
    for pid in status_fds:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _child(request: protocol.ForkRequest, module_fd: int | None) -> None:
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        keep = [0, 1, 2]
        if module_fd is not None:
            if module_fd != protocol.MODULE_FD:
                os.dup2(module_fd, protocol.MODULE_FD)
            keep.append(protocol.MODULE_FD)
        _close_all_but(keep)
        entry = _resolve(request.entry)
        entry(request.spec)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the worker's last words go to stderr, its status says it failed
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _prepare_shared_work() -> None:
    """Work every worker would otherwise repeat after its fork (docs/performance.md, "Worker start"): the codecs
    the lockdown preloads (each an import from disk) and the compiled seccomp program."""
    for name in lockdown.PRELOADED_CODECS:
        codecs.lookup(name)
    try:
        seccomp.compiled()
    except seccomp.LayerFailed:
        pass  # no libseccomp: each worker reports the missing layer itself
    try:
        _warm_up_engine()
    except Exception as exc:  # noqa: BLE001 - only a speed-up: each worker then does this itself
        print(f"tark fork server: wasmtime warm-up skipped: {exc}", file=sys.stderr)


_WARM_UP_WAT = '(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))'


def _warm_up_engine() -> None:
    """Run wasmtime's worker path once (engine, deserialize, WASI linker, store, instance, call) so that its
    one-time set-up (trap handlers, lazily bound code pages, wasmtime-py's caches) happens here, shared by every
    worker, instead of in each. No thread is started: compilation is serial (protocol.build_engine_config)."""
    engine = wasmtime.Engine(protocol.build_engine_config(protocol.EngineSettings()))
    module = wasmtime.Module.deserialize(engine, wasmtime.Module(engine, wasmtime.wat2wasm(_WARM_UP_WAT)).serialize())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=1 << 20)
    store.set_wasi(wasmtime.WasiConfig())
    store.set_epoch_deadline(1)
    instance = linker.instantiate_pre(module).instantiate(store)
    instance.exports(store)["run"](store)
    store.close()


def _not_dumpable() -> None:
    """No ptrace and no /proc/<pid>/mem for other processes of our uid: whoever could write into the fork server
    would be in every worker forked after. Workers inherit it, so their start-up token is as well kept."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        print(f"tark fork server: prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}",
              file=sys.stderr)


def _resolve(entry: str):
    """`module:qualname` -> the function (the supervisor names the entry; tests name their stand-in workers)."""
    module_name, _, qualname = entry.partition(":")
    target = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _close_all_but(keep: list[int]) -> None:
    """Close every descriptor above max(keep) (keep is stdio, maybe MODULE_FD right after it)."""
    os.closerange(max(keep) + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _receive(control: socket.socket) -> tuple[bytes, list[int]]:
    data, ancdata, _flags, _addr = control.recvmsg(protocol.MAX_FORK_REQUEST_BYTES,
                                                   socket.CMSG_SPACE(MAX_FDS * STATUS.size))
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4]))
    for fd in fds:  # SCM_RIGHTS descriptors arrive inheritable; only the child that needs one gets it (dup2)
        os.set_inheritable(fd, False)
    return data, fds


def _hung_up(control: socket.socket) -> bool:
    poller = select.poll()
    poller.register(control, select.POLLIN)
    return any(event & (select.POLLHUP | select.POLLERR) for _fd, event in poller.poll(0))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(status_fds: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_w = status_fds.pop(pid, None)
        if status_w is not None:
            try:
                os.write(status_w, STATUS.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass  # the supervisor no longer listens
            os.close(status_w)
