"""Starting one worker process and knowing who it is.

`WorkerStarter.start` compiles (or reads from the cache) the plugin's module, binds a private ROUTER endpoint,
spawns the worker through the fork server with a one-time token and waits for its Ready: the connection that
presents the token is pinned as the worker's identity and the endpoint's path is removed, so nobody else can
connect. Messages from any other connection are strangers': ignored and audited (docs/security.md). `terminate`
ends a worker and releases everything it held (its uid, socket, endpoint, host).

The errors a call can end with (`Fail` and the kinds) live here too: starting is the first part of a call.
"""

from __future__ import annotations

import hmac
import logging
import os
import resource
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

import attrs
import zmq

from policy.limits import Limits, worker_address_space_bytes
from supervisor import forkserver
from supervisor.call_stats import PluginStats
from supervisor.modules import ModuleCache, ModuleCompileError
from supervisor.placement import CpuPlacement, pin_threads
from supervisor.plugin import InstalledPlugin
from worker import protocol

if TYPE_CHECKING:
    from supervisor.call_driver import Call, Wake

log = logging.getLogger("supervisor.workers")

STOP_GRACE_S = 1.0
DEFAULT_WORKER_UIDS = range(3_000_000, 3_065_536)  # far above login users and common subuid ranges
# Messages the supervisor's socket queues per worker connection before ZeroMQ stops reading from it. A call is a
# strict request/reply plus one-way logs, so a few suffice; with ZMQ_MAXMSGSIZE this bounds what one worker (or a
# stranger on its endpoint) can make the supervisor hold: (RCVHWM + 1) * MAX_MESSAGE_BYTES.
RCVHWM = 4
MAX_STRANGER_EVENTS = 16  # forged_worker_message events per worker

_SPEC_DEFAULTS = dict(
    zip(protocol.WorkerSpec.__struct_fields__[-len(protocol.WorkerSpec.__struct_defaults__):],
        protocol.WorkerSpec.__struct_defaults__)
)

_ENGINE_DEFAULTS = protocol.EngineSettings()

# Error kinds the pool adds to the worker's protocol.CALL_ERROR_KINDS.
WORKER_DIED = "worker_died"
TIMEOUT = "timeout"
INVALID_MESSAGE = "invalid_message"
CANCELLED = "cancelled"
START_FAILED = "start_failed"
PARKED = "parked"
RESTARTING = "restarting"


# What the pool reports to the audit trail (plugin, kind, fields); see `log_security_event` for the default.
SecurityEvents = Callable[[str, str, dict[str, Any]], None]


def log_security_event(plugin: str, kind: str, fields: dict[str, Any]) -> None:
    log.warning("security event %s for plugin %s: %s", kind, plugin, fields)


class HostHandler(Protocol):
    def handle(self, request: protocol.HostRequest) -> protocol.HostReply: ...

    # Optional: start a host call that waits (network) and return its future, or None to have `handle` answer.
    # def begin(self, request: protocol.HostRequest) -> concurrent.futures.Future[protocol.HostReply] | None: ...

    def on_log(self, message: protocol.Log | protocol.GuestOutput) -> None: ...

    def close(self) -> None: ...


class Fail(Exception):
    """Ends a call with an error outcome; `kill` = the worker can no longer be trusted or used; `crash` = a worker
    ended abnormally (counts against the restart policy; a kill always does)."""

    def __init__(self, kind: str, message: str, *, kill: bool, crash: bool | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.kill = kill
        self.crash = kill if crash is None else crash


@attrs.frozen
class WorkerLimits:
    """Per-plugin limits a worker enforces inside itself (defaults as in protocol.WorkerSpec)."""

    memory_limit_bytes: int = attrs.field(factory=lambda: _SPEC_DEFAULTS["memory_limit_bytes"])
    call_cpu_ms: int = attrs.field(factory=lambda: _SPEC_DEFAULTS["call_cpu_ms"])
    epoch_tick_ms: int = attrs.field(factory=lambda: _SPEC_DEFAULTS["epoch_tick_ms"])
    fuel_per_call: int | None = None
    log_lines_per_second: int = attrs.field(factory=lambda: _SPEC_DEFAULTS["log_lines_per_second"])
    os_memory_limit_bytes: int | None = attrs.field(factory=lambda: _SPEC_DEFAULTS["os_memory_limit_bytes"])
    open_files_limit: int = attrs.field(factory=lambda: _SPEC_DEFAULTS["open_files_limit"])

    @classmethod
    def derive(cls, limits: Limits) -> WorkerLimits:
        """The worker's part of a plugin's resolved limits (policy/limits.py)."""
        return cls(memory_limit_bytes=limits.memory_limit_bytes, call_cpu_ms=limits.call_cpu_ms,
                   os_memory_limit_bytes=worker_address_space_bytes(limits, _ENGINE_DEFAULTS.memory_guard_size))


@attrs.define
class Worker:
    """One running worker process and the socket the supervisor bound for it."""

    process: forkserver.WorkerProcess
    socket: zmq.Socket
    endpoint_path: Path
    host: HostHandler
    plugin: InstalledPlugin
    pid: int = 0
    peer: bytes | None = None  # the routing id of the connection that presented the token, pinned
    strangers: set[tuple[bytes, str]] = attrs.field(factory=set)  # (connection, message type) already audited
    started: float = attrs.field(factory=time.monotonic)
    warnings: list[str] = attrs.field(factory=list)  # from its Ready: lock-down steps not applied
    stats: PluginStats | None = None  # its plugin's counters
    uid: int | None = None  # the worker's own uid (root supervisors)
    layers: list[str] = attrs.field(factory=list)  # sandbox layers the worker reported in Ready
    cpu: int | None = None  # its home CPU (supervisor/placement.py), None: left to the scheduler

    poller: zmq.Poller | None = None  # socket, process sentinel, wake fd and pool interrupt fd, built once
    wake: Wake | None = None  # a finished waiting host call signals it

    def send(self, message: protocol.ToWorker) -> None:
        assert self.peer is not None
        # Two sends instead of send_multipart (no list, no per-frame keyword handling: ~1.5 µs per host call).
        self.socket.send(self.peer, zmq.SNDMORE)
        self.socket.send(protocol.encode(message), copy=False)


class WorkerStarter:
    """Starts workers for a pool and ends them: the fork server, the ZeroMQ context, the uid range."""

    def __init__(
        self,
        runtime_dir: Path,
        module_cache: ModuleCache,
        *,
        start_timeout_s: float,
        worker_entry: Callable[[bytes], None],
        security_events: SecurityEvents,
        pinned_wasm: Callable[[InstalledPlugin], str | None],
        required_layers: Callable[[InstalledPlugin], Iterable[str]],
        worker_uids: range,
        interrupt_fd: int,
        placement: CpuPlacement | None = None,
    ) -> None:
        self._runtime_dir = Path(runtime_dir)
        self._modules = module_cache
        self._start_timeout_s = start_timeout_s
        self._worker_entry = worker_entry  # tests substitute a misbehaving worker here
        self._security_events = security_events
        self._pinned_wasm = pinned_wasm
        self._required_layers = required_layers
        self._worker_uids = worker_uids
        self._interrupt_fd = interrupt_fd
        self._lock = threading.Lock()
        self._uids_taken: set[int] = set()
        self._pids: set[int] = set()  # every worker process started and not yet reaped (see process_ids)
        self._warned: set[str] = set()  # sandbox warnings already logged
        self._placement = placement if placement is not None and placement.enabled else None
        self._contexts: dict[int | None, zmq.Context] = {}  # per home CPU: its I/O thread runs there
        self.fork_server = forkserver.ForkServer()

    def process_ids(self) -> set[int]:
        """Every process that runs untrusted code or starts it: the live workers and the fork server."""
        with self._lock:
            pids = set(self._pids)
        if self.fork_server.pid is not None:
            pids.add(self.fork_server.pid)
        return pids

    def start(self, plugin: InstalledPlugin, limits: WorkerLimits, host_factory: Callable[[InstalledPlugin], HostHandler],
              call: Call) -> Worker:
        # The engine reserves the plugin's whole memory cap up front: a guest growing page by page never has its
        # memory copied (docs/limits.md).
        settings = self._modules.settings_for(_reservation(limits, self._modules.settings.memory_guard_size))
        try:
            self.fork_server.launch()  # a first start: it imports wasmtime while we compile or read the module
        except OSError as exc:
            raise Fail(START_FAILED, f"could not start the fork server: {exc}", kill=False) from None
        try:
            module = self._modules.load(plugin.wasm_path, plugin.name, settings,
                                        expected_sha256=self._pinned_wasm(plugin))
        except ModuleCompileError as exc:
            raise Fail(START_FAILED, str(exc), kill=False) from None
        endpoint_path = self._runtime_dir / f"w-{plugin.name}-{secrets.token_hex(6)}.sock"
        token = secrets.token_bytes(protocol.TOKEN_BYTES)
        uid = self._free_uid()
        cpu = self._placement.assign() if self._placement is not None else None
        socket = self._context(cpu).socket(zmq.ROUTER)
        socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        socket.setsockopt(zmq.RCVHWM, RCVHWM)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            socket.bind(f"ipc://{endpoint_path}")
            os.chmod(endpoint_path, 0o600)
            spec = protocol.WorkerSpec(
                plugin=plugin.name,
                endpoint=f"ipc://{endpoint_path}",
                module_path=str(module.path),
                module_fd=protocol.MODULE_FD,
                component=module.component,
                engine=settings,
                token=token,
                run_as_uid=uid,
                **attrs.asdict(limits),
            )
            process = self.fork_server.start(self._worker_entry, protocol.encode(spec), module.fd)
            with self._lock:
                self._pids.add(process.pid)
        except BaseException as exc:  # forkserver.ForkServerError, OSError; Ctrl-C
            with self._lock:
                self._uids_taken.discard(uid)
            if cpu is not None:
                self._placement.release(cpu)
            socket.close(linger=0)
            endpoint_path.unlink(missing_ok=True)
            if not isinstance(exc, Exception):
                raise  # Ctrl-C while starting: nothing left behind
            raise Fail(START_FAILED, f"could not start a worker for plugin '{plugin.name}': {exc}", kill=False) from None
        worker = Worker(process, socket, endpoint_path, NoHost(), plugin, uid=uid, cpu=cpu)
        try:
            self._await_ready(worker, token, call)
            if cpu is not None:
                pin_threads(process.pid, cpu)
            worker.host = host_factory(plugin)
        except Fail:
            self.terminate(worker)
            raise
        except BaseException as exc:
            self.terminate(worker)
            if not isinstance(exc, Exception):
                raise  # Ctrl-C while the worker starts: nothing left behind
            raise Fail(START_FAILED, f"could not set up the host for plugin '{plugin.name}': {exc}", kill=False) from None
        return worker

    def _await_ready(self, worker: Worker, token: bytes, call: Call) -> None:
        """Wait for the worker's Ready (or StartFailed) carrying its token; pin the connection it came on and remove
        the endpoint's path so nobody else can connect. Anything else is a stranger's: ignored and audited."""
        name = worker.plugin.name
        start_deadline = time.monotonic() + self._start_timeout_s
        deadline = min(start_deadline, call.deadline)
        poller = zmq.Poller()
        poller.register(worker.socket, zmq.POLLIN)
        poller.register(worker.process.sentinel, zmq.POLLIN)
        poller.register(self._interrupt_fd, zmq.POLLIN)
        if call.cancel_fd is not None:
            poller.register(call.cancel_fd, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if call.deadline < start_deadline:
                    raise Fail(TIMEOUT, call.timeout_message(None, starting=True), kill=False, crash=False)
                raise Fail(
                    START_FAILED, f"worker for plugin '{name}' did not start within {self._start_timeout_s:g} s",
                    kill=False, crash=True,
                )
            events = dict(poller.poll(remaining * 1000))
            if self._interrupt_fd in events:
                raise Fail(CANCELLED, call.cancelled_message("the supervisor is stopping"), kill=False, crash=False)
            if call.cancel_fd is not None and call.cancel_fd in events:
                raise Fail(CANCELLED, call.cancelled_message("its caller went away"), kill=False, crash=False)
            if worker.socket in events:
                peer, frame = recv_message(worker.socket)
                message = decode_or_none(frame)
                if not isinstance(message, (protocol.Ready, protocol.StartFailed)) or not hmac.compare_digest(
                    message.token, token
                ):
                    stranger(self._security_events, worker, peer, frame, "while the worker starts")
                    continue
                worker.peer, worker.pid = peer, worker.process.pid
                worker.endpoint_path.unlink(missing_ok=True)
                if isinstance(message, protocol.StartFailed):  # a clear refusal (bad module, unknown import)
                    raise Fail(START_FAILED, message.message, kill=False)
                if isinstance(message, protocol.Ready):
                    worker.warnings = list(message.warnings)
                self._warn_once(message.warnings)
                worker.layers = list(message.layers)
                missing = [layer for layer in self._required_layers(worker.plugin) if layer not in message.layers]
                if missing:
                    raise Fail(START_FAILED, f"plugin '{name}' may only run with the sandbox layers "
                               f"{', '.join(missing)} (admin policy [lockdown] require), which this worker could not "
                               f"apply; it has {', '.join(message.layers) or 'none'}"
                               + (f" ({'; '.join(message.warnings)})" if message.warnings else ""), kill=False)
                return
            elif worker.process.sentinel in events:
                raise Fail(START_FAILED, death_message(worker, "while starting"), kill=False, crash=True)

    def _free_uid(self) -> int | None:
        """Take the lowest uid of the range no worker holds (None: no range); `terminate` gives it back once the
        worker has been reaped."""
        if not self._worker_uids:
            return None
        with self._lock:
            for uid in self._worker_uids:
                if uid not in self._uids_taken:
                    self._uids_taken.add(uid)
                    return uid
        raise Fail(START_FAILED, f"all {len(self._worker_uids)} worker uids are in use; stop idle plugins or widen "
                   "the range", kill=False)

    def _warn_once(self, warnings: list[str]) -> None:
        with self._lock:
            new = [w for w in warnings if w not in self._warned]
            self._warned.update(new)
        for warning in new:
            log.warning("worker sandbox degraded: %s", warning)

    def stop(self, worker: Worker) -> None:
        """Graceful stop: Shutdown, then a kill if the worker does not exit within STOP_GRACE_S."""
        if worker.process.is_alive() and worker.peer is not None:
            try:
                worker.send(protocol.Shutdown())
            except zmq.ZMQError:
                pass
            worker.process.join(STOP_GRACE_S)
        self.terminate(worker)

    def terminate(self, worker: Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        with self._lock:
            self._pids.discard(worker.process.pid)
            self._uids_taken.discard(worker.uid)
        if worker.cpu is not None:
            self._placement.release(worker.cpu)
            worker.cpu = None
        worker.process.close()
        worker.socket.close(linger=0)
        worker.endpoint_path.unlink(missing_ok=True)
        if worker.wake is not None:
            worker.wake.close()
        try:
            worker.host.close()
        except Exception:
            pass

    def close(self) -> None:
        """After every worker is terminated: the fork server and the context."""
        self.fork_server.close()
        for context in self._contexts.values():
            context.destroy(linger=0)  # every socket is closed by now; linger 0 so term never waits

    def _context(self, cpu: int | None) -> zmq.Context:
        with self._lock:
            if not self._contexts:  # every CPU's at once: the descriptors they hold do not grow with the workers
                for home in sorted(self._placement.cpus) if self._placement is not None else [None]:
                    self._contexts[home] = _new_context(home)
            return self._contexts[cpu]


def _new_context(cpu: int | None) -> zmq.Context:
    context = zmq.Context()
    # One socket per worker: ZeroMQ's default cap of 1023 sockets would fail the 1024th worker; descriptors are the
    # real bound, checked before each start (supervisor/admission.py).
    context.set(zmq.MAX_SOCKETS, max(1023, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    if cpu is not None:
        context.set(zmq.THREAD_AFFINITY_CPU_ADD, cpu)
    context.socket(zmq.ROUTER).close(linger=0)  # starts its I/O thread (pinned to `cpu`) now
    return context


class NoHost:
    """Placeholder while a worker starts (no host request can arrive before Ready)."""

    def handle(self, request: protocol.HostRequest) -> protocol.HostReply:
        return protocol.HostReply(host_call_id=request.host_call_id, code=-1)

    def on_log(self, message: protocol.Log | protocol.GuestOutput) -> None:
        pass

    def close(self) -> None:
        pass


def death_message(worker: Worker, when: str) -> str:
    worker.process.join(0.5)
    code = worker.process.exitcode
    if code is None:
        how = "it stopped responding" if worker.process.is_alive() else "exit status unknown"
    elif code < 0:
        try:
            how = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    return f"worker for plugin '{worker.plugin.name}' died {when} ({how})"


def stranger(security_events: SecurityEvents, worker: Worker, peer: bytes, frame: bytes | None, when: str) -> None:
    """A message on the worker's endpoint from a connection other than the worker's: ignored, audited once per
    connection and message type, at most MAX_STRANGER_EVENTS times per worker (a flood of them is bounded by
    RCVHWM, not by the audit trail)."""
    what = describe(frame)
    key = (peer, what if frame is None or what != f"{len(frame)} undecodable bytes" else "undecodable")
    if key in worker.strangers or len(worker.strangers) >= MAX_STRANGER_EVENTS:
        return
    worker.strangers.add(key)
    security_events(worker.plugin.name, "forged_worker_message",
                    {"endpoint": str(worker.endpoint_path), "when": when, "message": what})


def recv_message(socket: zmq.Socket) -> tuple[bytes, bytes | None]:
    """One message from a ROUTER: the sender's routing id and its one frame (None if it sent several, all dropped).
    Two recv calls and one RCVMORE check instead of recv_multipart (~1 µs per host call)."""
    peer = socket.recv()
    frame = socket.recv()
    if not socket.get(zmq.RCVMORE):
        return peer, frame
    while socket.get(zmq.RCVMORE):
        socket.recv()
    return peer, None


def decode_or_none(frame: bytes | None) -> protocol.FromWorker | None:
    if frame is None:
        return None
    try:
        return protocol.decode_from_worker(frame)
    except protocol.ProtocolError:
        return None


def describe(frame: bytes | None) -> str:
    """What a message was, for the audit trail (never its content)."""
    message = decode_or_none(frame)
    if message is not None:
        return type(message).__name__
    return "several frames" if frame is None else f"{len(frame)} undecodable bytes"


def _reservation(limits: WorkerLimits, guard: int) -> int:
    """The engine's memory reservation: the plugin's memory cap, unless the worker's RLIMIT_AS could not hold
    four such stores (then growth past it copies memory, but the OS cap stays in force)."""
    reservation = limits.memory_limit_bytes
    if limits.os_memory_limit_bytes is not None and reservation + guard > limits.os_memory_limit_bytes // 4:
        page = 65536
        reservation = max(0, limits.os_memory_limit_bytes // 4 - guard) // page * page
    return reservation
