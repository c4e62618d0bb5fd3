"""Worker processes (one per plugin) and the supervisor's side of an export call.

A call is driven by the calling thread, one call at a time per worker: send Invoke, then poll the worker's socket
and its process sentinel together, answer each host request through the plugin's HostHandler, and finish on
InvokeResult. Each call has one wall deadline covering the worker's start, guest CPU and every host call it waits
on (docs/limits.md): quick host calls are answered inline, host calls that wait on the network are started with
`HostHandler.begin` and their future is polled next to the worker, so the deadline, the caller's cancel fd (a
dropped control connection) or the pool closing cancels the host work at once and replaces the worker. The worker is untrusted: a message that fails decoding, a result for another call or a result that
breaks the rules the supervisor set (buffer capacity) gets the worker killed. A dead worker fails its call at once
(sentinel) and is replaced on the next call, after the backoff of the pool's RestartPolicy; too many crashes in its
period park the plugin (calls fail at once) until `reset(name)`.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import attrs
import zmq

from policy.limits import Limits, worker_address_space_bytes
from policy.restart import Parked, RestartPolicy, StartAfter, decide, recent
from supervisor import forkserver
from supervisor.call_stats import PluginStats
from supervisor.modules import ModuleCache, ModuleCompileError
from supervisor.plugin import InstalledPlugin
from worker import protocol
from worker.main import run

log = logging.getLogger(__name__)

STOP_GRACE_S = 1.0
DEFAULT_WORKER_UIDS = range(3_000_000, 3_065_536)  # far above login users and common subuid ranges
# Messages the supervisor's socket queues per worker connection before ZeroMQ stops reading from it. A call is a
# strict request/reply plus one-way logs, so a few suffice; with ZMQ_MAXMSGSIZE this bounds what one worker (or a
# stranger on its endpoint) can make the supervisor hold: (RCVHWM + 1) * MAX_MESSAGE_BYTES.
RCVHWM = 4
DEFAULT_CALL_TIMEOUT_S = 120.0
IDLE_WATCH_S = 1.0  # how often idle workers are checked for messages they should not send
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


class PluginCallError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@attrs.frozen
class CallOutcome:
    ret: int | None
    output: bytes | None
    error_kind: str | None
    error_message: str | None
    worker_pid: int | None
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    def raise_for_error(self) -> CallOutcome:
        if self.error_kind is not None:
            raise PluginCallError(self.error_kind, self.error_message or self.error_kind)
        return self


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

@attrs.frozen
class WorkerStatus:
    name: str
    pid: int | None
    state: str  # "running" | "stopped" | "crashed" (also when parked)
    calls: int
    restarts: int
    last_error: str | None
    last_error_kind: str | None = None  # "timeout", "cancelled", "trap", "worker_died", ...
    uptime_s: float | None = None  # of the running worker
    parked: str | None = None  # why calls fail at once until `tark plugin enable`
    sandbox_warnings: list[str] = attrs.field(factory=list)  # lock-down steps the running worker could not apply
    stats: dict = attrs.field(factory=dict)  # call_stats.PluginStats.snapshot()
    layers: list[str] = attrs.field(factory=list)  # sandbox layers the running worker reported (worker/lockdown)


def _audit_event(host: HostHandler, kind: str, detail: str) -> None:
    audit = getattr(host, "audit", None)  # the real PluginHost has an audit trail; bare test hosts do not
    if audit is not None:
        audit.event(kind, detail=detail)


class _Fail(Exception):
    """Ends a call with an error outcome; `kill` = the worker can no longer be trusted or used; `crash` = a worker
    ended abnormally (counts against the restart policy; a kill always does)."""

    def __init__(self, kind: str, message: str, *, kill: bool, crash: bool | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.kill = kill
        self.crash = kill if crash is None else crash


@attrs.define
class _Worker:
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

    poller: zmq.Poller | None = None  # socket, process sentinel, wake fd and pool interrupt fd, built once
    wake: _Wake | None = None  # a finished waiting host call signals it

    def send(self, message: protocol.ToWorker) -> None:
        assert self.peer is not None
        # Two sends instead of send_multipart (no list, no per-frame keyword handling: ~1.5 µs per host call).
        self.socket.send(self.peer, zmq.SNDMORE)
        self.socket.send(protocol.encode(message), copy=False)


@attrs.define
class _Slot:
    """Everything the pool keeps about one plugin across worker restarts."""

    name: str
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    worker: _Worker | None = None
    calls: int = 0
    restarts: int = 0
    crashed: bool = False  # the last worker ended abnormally; the next start counts as a restart
    crash_times: list[float] = attrs.field(factory=list)  # monotonic, only those the restart policy still counts
    parked: str | None = None  # why calls fail at once until reset()
    last_error: str | None = None
    last_error_kind: str | None = None
    last_used: float = attrs.field(factory=time.monotonic)
    stats: PluginStats = attrs.field(factory=PluginStats)


class WorkerPool:
    def __init__(
        self,
        runtime_dir: Path,
        module_cache: ModuleCache,
        host_factory: Callable[[InstalledPlugin], HostHandler],
        *,
        idle_timeout_s: float = 300,
        start_timeout_s: float = 10,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        limits: Callable[[InstalledPlugin], WorkerLimits] | None = None,
        restart: RestartPolicy = RestartPolicy(),
        worker_entry: Callable[[bytes], None] = run,
        security_events: SecurityEvents = log_security_event,
        pinned_wasm: Callable[[InstalledPlugin], str | None] = lambda plugin: None,
        required_layers: Callable[[InstalledPlugin], Iterable[str]] = lambda plugin: (),
        worker_uids: range | None = None,
    ) -> None:
        """`pinned_wasm(plugin)` is the approved sha256 of its wasm (supervisor/consent): the bytes compiled for a
        worker must have it, so a file swapped after the supervisor's pin check is never run.
        `required_layers`: sandbox layers a plugin's worker must report, else it is not used (the admin policy's
        [lockdown] require). `worker_uids`: the uids workers drop to, one per running worker; by default
        DEFAULT_WORKER_UIDS when the supervisor runs as root, else none (docs/security.md, "Own uid")."""
        self._runtime_dir = Path(runtime_dir)
        self._pinned_wasm = pinned_wasm
        self._modules = module_cache
        self._host_factory = host_factory
        self._idle_timeout_s = idle_timeout_s
        self._start_timeout_s = start_timeout_s
        self._call_timeout_s = call_timeout_s
        self._limits = limits or (lambda plugin: WorkerLimits())
        self._restart = restart
        self._worker_entry = worker_entry  # tests substitute a misbehaving worker here
        self._security_events = security_events
        self._required_layers = required_layers
        self._worker_uids = worker_uids if worker_uids is not None else (
            DEFAULT_WORKER_UIDS if os.geteuid() == 0 else range(0))
        self._uids_taken: set[int] = set()
        self._context = zmq.Context()
        self._fork_server = forkserver.ForkServer()
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._call_ids = 0
        self._warned: set[str] = set()  # sandbox warnings already logged
        self._pids: set[int] = set()  # every worker process started and not yet reaped (see process_ids)
        self._closed = threading.Event()
        self._interrupt_fd = os.eventfd(0, os.EFD_CLOEXEC)  # readable once the pool closes: calls end at once
        self._reaper = threading.Thread(target=self._reap_idle, name="worker-idle-reaper", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------------ public API

    def call(
        self,
        plugin: InstalledPlugin,
        export: str,
        args: list[bytes],
        result_capacity: int | None,
        *,
        instance: str = "fresh",
        timeout_s: float | None = None,
        cancel_fd: int | None = None,
    ) -> CallOutcome:
        """Run one export call. `timeout_s` is its wall deadline (default: the pool's); `cancel_fd` an fd that
        becomes readable when the caller gives up (a control connection's socket): the call then ends at once."""
        if self._closed.is_set():
            raise RuntimeError("the worker pool is closed")
        started = time.monotonic()
        call = _Call(plugin.name, export, timeout_s or self._call_timeout_s, started, cancel_fd)
        slot = self._slot(plugin.name)
        if not slot.lock.acquire(timeout=max(0.0, call.deadline - time.monotonic())):
            return CallOutcome(None, None, TIMEOUT, call.busy_message(), None, _since(started))
        try:
            slot.last_used = time.monotonic()
            slot.calls += 1
            worker: _Worker | None = None
            try:
                worker = self._ensure_worker(slot, plugin, call)
                self._expect_quiet(worker)
                invoke = protocol.Invoke(
                    call_id=self._next_call_id(),
                    export=export,
                    args=list(args),
                    result_capacity=result_capacity,
                    instance=instance,
                )
                result = self._drive(worker, invoke, call)
            except _Fail as failure:
                if failure.kind == INVALID_MESSAGE and worker is not None:
                    _audit_event(worker.host, "invalid_worker_message", failure.message)
                if failure.kill and slot.worker is not None:
                    self._discard(slot)
                slot.last_error, slot.last_error_kind = failure.message, failure.kind
                if failure.crash:
                    self._record_crash(slot, failure.message)
                slot.stats.call_ended(_since(started), failure.kind)
                return CallOutcome(None, None, failure.kind, failure.message, worker and worker.pid, _since(started))
            except BaseException:
                # Ctrl-C (KeyboardInterrupt) mid-call: the worker may be running the call; end it and remove its
                # endpoint so nothing is left behind, and the next call starts a fresh one.
                if slot.worker is not None:
                    self._discard(slot)
                raise
            finally:
                slot.last_used = time.monotonic()
            slot.stats.call_ended(_since(started), result.error and result.error.kind)
            if result.error is not None:
                slot.last_error, slot.last_error_kind = result.error.message, result.error.kind
                return CallOutcome(
                    result.ret, result.output, result.error.kind, result.error.message, worker.pid, _since(started)
                )
            return CallOutcome(result.ret, result.output, None, None, worker.pid, _since(started))
        finally:
            slot.lock.release()

    def end_instance(self, name: str, instance: str) -> None:
        slot = self._slot(name)
        with slot.lock:
            if slot.worker is not None and slot.worker.process.is_alive():
                slot.worker.send(protocol.EndInstance(instance=instance))

    def reset(self, name: str) -> None:
        """Forget a plugin's crashes: a parked plugin may start again (`tark plugin enable`)."""
        slot = self._slot(name)
        with slot.lock:
            slot.crash_times.clear()
            slot.parked = None
            slot.crashed = False

    def stop(self, name: str) -> None:
        with self._slots_lock:
            slot = self._slots.get(name)
        if slot is not None:
            with slot.lock:
                self._stop_worker(slot)

    def process_ids(self) -> set[int]:
        """Every process that runs untrusted code or starts it: the live workers and the fork server."""
        with self._slots_lock:
            pids = set(self._pids)
        if self._fork_server.pid is not None:
            pids.add(self._fork_server.pid)
        return pids

    def status(self) -> list[WorkerStatus]:
        with self._slots_lock:
            slots = list(self._slots.values())
        statuses = []
        now = time.monotonic()
        for slot in slots:
            worker = slot.worker
            alive = worker is not None and worker.process.is_alive()
            if slot.parked is not None:
                state = "crashed"  # parked: see `parked` for why
            else:
                state = "running" if alive else ("crashed" if slot.crashed or worker is not None else "stopped")
            statuses.append(WorkerStatus(
                slot.name, worker.pid if alive else None, state, slot.calls, slot.restarts, slot.last_error,
                last_error_kind=slot.last_error_kind,
                uptime_s=now - worker.started if alive else None,
                parked=slot.parked,
                sandbox_warnings=list(worker.warnings) if alive else [],
                layers=list(worker.layers) if alive else [],
                stats=slot.stats.snapshot(),
            ))
        return statuses

    def interrupt(self) -> None:
        """End every call in flight at once (the supervisor is stopping); later calls are refused."""
        with self._slots_lock:
            self._closed.set()
            if self._interrupt_fd >= 0:
                os.eventfd_write(self._interrupt_fd, 1)

    def close(self) -> None:
        """Interrupt the calls in flight, stop every worker, release the sockets. Idempotent."""
        if self._interrupt_fd < 0:
            return
        self.interrupt()
        self._reaper.join()
        with self._slots_lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.lock:
                self._stop_worker(slot)
        self._fork_server.close()
        self._context.destroy(linger=0)  # every socket is closed by now; linger 0 so term never waits
        with self._slots_lock:
            os.close(self._interrupt_fd)
            self._interrupt_fd = -1

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one call

    def _drive(self, worker: _Worker, invoke: protocol.Invoke, call: _Call) -> protocol.InvokeResult:
        poller = self._poller(worker)
        if call.cancel_fd is not None:
            poller.register(call.cancel_fd, zmq.POLLIN)
        pending: _Pending | None = None
        set_call = getattr(worker.host, "set_call", None)
        if set_call is not None:
            set_call(call.deadline)
        try:
            self._send(worker, invoke, invoke)
            while True:
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    raise _Fail(TIMEOUT, call.timeout_message(pending), kill=True, crash=False)
                events = dict(poller.poll(remaining * 1000))
                if not events:
                    continue
                if worker.socket in events:
                    message = self._receive(worker)
                    if message is None:
                        continue
                    if isinstance(message, protocol.InvokeResult):
                        if pending is not None:
                            self._invalid(worker, f"a result while its {pending.what} host call was pending")
                        self._check_result(worker, invoke, message)
                        return message
                    if pending is not None and not isinstance(message, (protocol.Log, protocol.GuestOutput)):
                        self._invalid(worker, f"a host request while its {pending.what} host call was pending")
                    pending = self._serve(worker, invoke, message)
                if worker.wake.fd in events:
                    worker.wake.drain()
                    if pending is not None and pending.future.done():
                        done, pending = pending, None
                        reply = done.reply()
                        self._count(worker, done.request, reply.code)
                        self._send(worker, invoke, reply)
                if worker.process.sentinel in events:
                    raise _Fail(WORKER_DIED, self._death_message(worker, f"during '{invoke.export}'"), kill=True)
                if self._interrupt_fd in events:
                    raise _Fail(CANCELLED, call.cancelled_message("the supervisor is stopping"), kill=True,
                                crash=False)
                if call.cancel_fd is not None and call.cancel_fd in events:
                    raise _Fail(CANCELLED, call.cancelled_message("its caller went away"), kill=True, crash=False)
        finally:
            if set_call is not None:
                set_call(None)
            if pending is not None:
                pending.future.cancel()  # cancels the host work itself (the request, the recv)
            if call.cancel_fd is not None:
                poller.unregister(call.cancel_fd)

    def _poller(self, worker: _Worker) -> zmq.Poller:
        poller = worker.poller
        if poller is None:
            worker.wake = _Wake()
            poller = worker.poller = zmq.Poller()
            poller.register(worker.socket, zmq.POLLIN)
            poller.register(worker.process.sentinel, zmq.POLLIN)
            poller.register(worker.wake.fd, zmq.POLLIN)
            poller.register(self._interrupt_fd, zmq.POLLIN)
        return poller

    def _receive(self, worker: _Worker) -> protocol.FromWorker | None:
        peer, frame = _recv_message(worker.socket)
        if peer != worker.peer:
            self._stranger(worker, peer, frame, "during a call")
            return None
        if frame is None:
            self._invalid(worker, "a message of more than one frame")
        try:
            return protocol.decode_from_worker(frame)
        except protocol.ProtocolError as exc:
            raise _Fail(INVALID_MESSAGE, f"worker for plugin '{worker.plugin.name}' sent an invalid message: {exc}", kill=True)

    def _expect_quiet(self, worker: _Worker) -> None:
        """Between calls the worker has nothing to say: a message from it found queued ends it (it would otherwise
        pile up in the supervisor's memory, or be taken as part of the next call); strangers' are dropped."""
        while worker.socket.get(zmq.EVENTS) & zmq.POLLIN:
            peer, frame = _recv_message(worker.socket)
            if peer != worker.peer:
                self._stranger(worker, peer, frame, "between calls")
                continue
            self._security_events(worker.plugin.name, "worker_message_outside_call",
                                  {"pid": worker.pid, "message": _describe(frame)})
            self._invalid(worker, f"{_describe(frame)} outside a call")

    def _stranger(self, worker: _Worker, peer: bytes, frame: bytes | None, when: str) -> None:
        """A message on the worker's endpoint from a connection other than the worker's: ignored, audited once per
        connection and message type, at most MAX_STRANGER_EVENTS times per worker (a flood of them is bounded by
        RCVHWM, not by the audit trail)."""
        what = _describe(frame)
        key = (peer, what if frame is None or what != f"{len(frame)} undecodable bytes" else "undecodable")
        if key in worker.strangers or len(worker.strangers) >= MAX_STRANGER_EVENTS:
            return
        worker.strangers.add(key)
        self._security_events(worker.plugin.name, "forged_worker_message",
                              {"endpoint": str(worker.endpoint_path), "when": when, "message": what})

    def _serve(self, worker: _Worker, invoke: protocol.Invoke, message: protocol.FromWorker) -> _Pending | None:
        """Answer a quick host request now, or start a waiting one and return it (answered when it is done)."""
        if isinstance(message, (protocol.Log, protocol.GuestOutput)):
            try:
                worker.host.on_log(message)
            except Exception:
                pass
            self._count(worker, message, 0)
            return None
        if isinstance(message, (protocol.Ready, protocol.StartFailed)):
            self._invalid(worker, f"unexpected {type(message).__name__} during '{invoke.export}'")
        begin = getattr(worker.host, "begin", None)
        future = begin(message) if begin is not None else None
        if future is not None:
            wake = worker.wake
            future.add_done_callback(lambda _f: wake.signal())
            return _Pending(future, message)
        try:
            reply = worker.host.handle(message)
        except Exception:  # HostHandler.handle must not raise; if it does, the guest sees a failure code
            reply = protocol.HostReply(host_call_id=message.host_call_id, code=-1)
        if reply.host_call_id != message.host_call_id:
            reply = protocol.HostReply(host_call_id=message.host_call_id, code=reply.code, data=reply.data)
        self._count(worker, message, reply.code)
        self._send(worker, invoke, reply)
        return None

    @staticmethod
    def _count(worker: _Worker, message: protocol.FromWorker, code: int) -> None:
        if worker.stats is not None:
            tag = type(message).__struct_config__.tag
            worker.stats.host_call("log" if tag == "output" else tag.partition(".")[0], code)

    def _send(self, worker: _Worker, invoke: protocol.Invoke, message: protocol.ToWorker) -> None:
        try:
            worker.send(message)
        except zmq.ZMQError:  # ROUTER_MANDATORY: the worker's connection is gone
            raise _Fail(WORKER_DIED, self._death_message(worker, f"during '{invoke.export}'"), kill=True) from None

    def _check_result(self, worker: _Worker, invoke: protocol.Invoke, result: protocol.InvokeResult) -> None:
        if result.call_id != invoke.call_id:
            self._invalid(worker, f"result for call {result.call_id} while call {invoke.call_id} was running")
        if result.error is not None:
            if result.error.kind not in protocol.CALL_ERROR_KINDS:
                self._invalid(worker, f"unknown error kind {result.error.kind!r}")
            return
        if result.ret is None:
            self._invalid(worker, "result without a return value or an error")
        if result.output is not None:
            capacity = invoke.result_capacity
            if capacity is None:
                self._invalid(worker, f"output for '{invoke.export}', which returns a bare status")
            if len(result.output) > capacity:
                self._invalid(worker, f"output of {len(result.output)} bytes exceeds the {capacity}-byte buffer")
            if result.ret >= 0 and len(result.output) != result.ret:
                self._invalid(worker, f"output of {len(result.output)} bytes for a return value of {result.ret}")
        elif invoke.result_capacity is not None and result.ret >= 0:
            self._invalid(worker, f"no output for a return value of {result.ret}")

    @staticmethod
    def _invalid(worker: _Worker, what: str) -> None:
        raise _Fail(INVALID_MESSAGE, f"worker for plugin '{worker.plugin.name}' sent an invalid message: {what}", kill=True)

    # ------------------------------------------------------------------ worker lifecycle

    def _slot(self, name: str) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = _Slot(name)
            return slot

    def _next_call_id(self) -> int:
        with self._slots_lock:
            self._call_ids += 1
            return self._call_ids

    def _ensure_worker(self, slot: _Slot, plugin: InstalledPlugin, call: _Call) -> _Worker:
        worker = slot.worker
        if worker is not None and not worker.process.is_alive():
            message = self._death_message(worker, "while idle")
            self._discard(slot)
            slot.last_error = message
            self._record_crash(slot, message)
            worker = None
        elif worker is not None and worker.plugin != plugin:  # reinstalled or updated: start over
            self._stop_worker(slot)
            worker = None
        if worker is None:
            self._await_restart(slot, call)
            if slot.crashed:
                slot.restarts += 1
            worker = self._start(plugin, call)
            worker.stats = slot.stats
            slot.worker = worker
            slot.crashed = False
        return worker

    def _record_crash(self, slot: _Slot, message: str) -> None:
        now = time.monotonic()
        slot.crashed = True
        slot.crash_times[:] = recent(self._restart, [*slot.crash_times, now], now)[-(self._restart.intensity + 1):]
        decision = decide(self._restart, slot.crash_times, now)
        if isinstance(decision, Parked) and slot.parked is None:
            slot.parked = (
                f"plugin '{slot.name}' is parked after {decision.crashes} crashes in {decision.period_s:g} s;"
                f" last error: {message}; run `tark plugin enable {slot.name}` or restart the supervisor"
                " to start it again"
            )
            slot.last_error = slot.parked

    def _await_restart(self, slot: _Slot, call: _Call) -> None:
        """Apply the restart policy before a start: fail if parked, wait out the backoff after a crash."""
        if slot.parked is not None:
            raise _Fail(PARKED, slot.parked, kill=False)
        decision = decide(self._restart, slot.crash_times, time.monotonic())
        if not isinstance(decision, StartAfter):
            return
        if time.monotonic() + decision.delay_s > call.deadline:
            raise _Fail(
                RESTARTING,
                f"plugin '{slot.name}' is restarting after a crash; its next start is in {decision.delay_s:.1f} s,"
                f" after this call's {call.timeout_s:g} s deadline; try again then",
                kill=False,
            )
        if self._closed.wait(decision.delay_s):
            raise _Fail(START_FAILED, "the worker pool is closed", kill=False)

    def _start(self, plugin: InstalledPlugin, call: _Call) -> _Worker:
        limits = self._limits(plugin)
        # The engine reserves the plugin's whole memory cap up front: a guest growing page by page never has its
        # memory copied (docs/limits.md).
        settings = self._modules.settings_for(_reservation(limits, self._modules.settings.memory_guard_size))
        try:
            self._fork_server.launch()  # a first start: it imports wasmtime while we compile or read the module
        except OSError as exc:
            raise _Fail(START_FAILED, f"could not start the fork server: {exc}", kill=False) from None
        try:
            module = self._modules.load(plugin.wasm_path, plugin.name, settings,
                                        expected_sha256=self._pinned_wasm(plugin))
        except ModuleCompileError as exc:
            raise _Fail(START_FAILED, str(exc), kill=False) from None
        endpoint_path = self._runtime_dir / f"w-{plugin.name}-{secrets.token_hex(6)}.sock"
        token = secrets.token_bytes(protocol.TOKEN_BYTES)
        uid = self._free_uid()
        socket = self._context.socket(zmq.ROUTER)
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
                engine=settings,
                token=token,
                run_as_uid=uid,
                **attrs.asdict(limits),
            )
            process = self._fork_server.start(self._worker_entry, protocol.encode(spec), module.fd)
            with self._slots_lock:
                self._pids.add(process.pid)
        except BaseException as exc:  # forkserver.ForkServerError, OSError; Ctrl-C
            with self._slots_lock:
                self._uids_taken.discard(uid)
            socket.close(linger=0)
            endpoint_path.unlink(missing_ok=True)
            if not isinstance(exc, Exception):
                raise  # Ctrl-C while starting: nothing left behind
            raise _Fail(START_FAILED, f"could not start a worker for plugin '{plugin.name}': {exc}", kill=False) from None
        worker = _Worker(process, socket, endpoint_path, _NoHost(), plugin, uid=uid)
        try:
            self._await_ready(worker, token, call)
            worker.host = self._host_factory(plugin)
        except _Fail:
            self._terminate(worker)
            raise
        except BaseException as exc:
            self._terminate(worker)
            if not isinstance(exc, Exception):
                raise  # Ctrl-C while the worker starts: nothing left behind
            raise _Fail(START_FAILED, f"could not set up the host for plugin '{plugin.name}': {exc}", kill=False) from None
        return worker

    def _await_ready(self, worker: _Worker, token: bytes, call: _Call) -> None:
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
                    raise _Fail(TIMEOUT, call.timeout_message(None, starting=True), kill=False, crash=False)
                raise _Fail(
                    START_FAILED, f"worker for plugin '{name}' did not start within {self._start_timeout_s:g} s",
                    kill=False, crash=True,
                )
            events = dict(poller.poll(remaining * 1000))
            if self._interrupt_fd in events:
                raise _Fail(CANCELLED, call.cancelled_message("the supervisor is stopping"), kill=False, crash=False)
            if call.cancel_fd is not None and call.cancel_fd in events:
                raise _Fail(CANCELLED, call.cancelled_message("its caller went away"), kill=False, crash=False)
            if worker.socket in events:
                peer, frame = _recv_message(worker.socket)
                message = _decode_or_none(frame)
                if not isinstance(message, (protocol.Ready, protocol.StartFailed)) or not hmac.compare_digest(
                    message.token, token
                ):
                    self._stranger(worker, peer, frame, "while the worker starts")
                    continue
                worker.peer, worker.pid = peer, worker.process.pid
                worker.endpoint_path.unlink(missing_ok=True)
                if isinstance(message, protocol.StartFailed):  # a clear refusal (bad module, unknown import)
                    raise _Fail(START_FAILED, message.message, kill=False)
                if isinstance(message, protocol.Ready):
                    worker.warnings = list(message.warnings)
                self._warn_once(message.warnings)
                worker.layers = list(message.layers)
                missing = [layer for layer in self._required_layers(worker.plugin) if layer not in message.layers]
                if missing:
                    raise _Fail(START_FAILED, f"plugin '{name}' may only run with the sandbox layers "
                                f"{', '.join(missing)} (admin policy [lockdown] require), which this worker could not "
                                f"apply; it has {', '.join(message.layers) or 'none'}"
                                + (f" ({'; '.join(message.warnings)})" if message.warnings else ""), kill=False)
                return
            elif worker.process.sentinel in events:
                raise _Fail(START_FAILED, self._death_message(worker, "while starting"), kill=False, crash=True)

    def _free_uid(self) -> int | None:
        """Take the lowest uid of the range no worker of this pool holds (None: no range); _terminate gives it back
        once the worker has been reaped."""
        if not self._worker_uids:
            return None
        with self._slots_lock:
            for uid in self._worker_uids:
                if uid not in self._uids_taken:
                    self._uids_taken.add(uid)
                    return uid
        raise _Fail(START_FAILED, f"all {len(self._worker_uids)} worker uids are in use; stop idle plugins or widen "
                    "the range", kill=False)

    def _warn_once(self, warnings: list[str]) -> None:
        with self._slots_lock:
            new = [w for w in warnings if w not in self._warned]
            self._warned.update(new)
        for warning in new:
            log.warning("worker sandbox degraded: %s", warning)

    def _stop_worker(self, slot: _Slot) -> None:
        """Graceful stop: Shutdown, then a kill if the worker does not exit within STOP_GRACE_S."""
        worker, slot.worker = slot.worker, None
        if worker is None:
            return
        if worker.process.is_alive() and worker.peer is not None:
            try:
                worker.send(protocol.Shutdown())
            except zmq.ZMQError:
                pass
            worker.process.join(STOP_GRACE_S)
        self._terminate(worker)

    def _discard(self, slot: _Slot) -> None:
        """Drop a worker that ended abnormally or can no longer be trusted (the caller records the crash)."""
        worker, slot.worker = slot.worker, None
        if worker is not None:
            self._terminate(worker)

    def _terminate(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        with self._slots_lock:
            self._pids.discard(worker.process.pid)
            self._uids_taken.discard(worker.uid)
        worker.process.close()
        worker.socket.close(linger=0)
        worker.endpoint_path.unlink(missing_ok=True)
        if worker.wake is not None:
            worker.wake.close()
        try:
            worker.host.close()
        except Exception:
            pass

    @staticmethod
    def _death_message(worker: _Worker, when: str) -> str:
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

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self._idle_timeout_s / 4, IDLE_WATCH_S))
        while not self._closed.wait(interval):
            with self._slots_lock:
                slots = list(self._slots.values())
            for slot in slots:
                if slot.worker is None:
                    continue
                if not slot.lock.acquire(blocking=False):
                    continue  # a call is running
                try:
                    self._watch_idle(slot)
                    if slot.worker is not None and time.monotonic() - slot.last_used >= self._idle_timeout_s:
                        self._stop_worker(slot)
                finally:
                    slot.lock.release()

    def _watch_idle(self, slot: _Slot) -> None:
        """End an idle worker that sends anything (see _expect_quiet)."""
        worker = slot.worker
        if worker is None or worker.peer is None:
            return
        try:
            self._expect_quiet(worker)
        except _Fail as failure:
            self._discard(slot)
            slot.last_error = failure.message
            self._record_crash(slot, failure.message)


@attrs.frozen
class _Call:
    """One export call's deadline and cancel fd, and the messages that name them."""

    plugin: str
    export: str
    timeout_s: float
    started: float
    cancel_fd: int | None

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def timeout_message(self, pending: _Pending | None, *, starting: bool = False) -> str:
        where = ""
        if pending is not None:
            where = f" (it was waiting for its {pending.what} host call, which was cancelled)"
        elif starting:
            where = " (its worker was still starting)"
        return (f"plugin '{self.plugin}' did not finish '{self.export}' within {self.timeout_s:g} s, the call's"
                f" deadline{where}; its worker was stopped")

    def cancelled_message(self, why: str) -> str:
        return f"call to '{self.export}' of plugin '{self.plugin}' was cancelled: {why}"

    def busy_message(self) -> str:
        return (f"plugin '{self.plugin}' did not start '{self.export}' within {self.timeout_s:g} s, the call's"
                " deadline: its previous call was still running")


@attrs.define
class _Pending:
    """A host call that waits (http, ws) running on the plugin host's event loop."""

    future: concurrent.futures.Future
    request: protocol.HostRequest

    @property
    def what(self) -> str:
        return f"tark:{type(self.request).__struct_config__.tag}"

    def reply(self) -> protocol.HostReply:
        try:
            reply = self.future.result(0)
        except BaseException:  # noqa: BLE001 - the host work failed or was cancelled: the guest gets -1
            return protocol.HostReply(host_call_id=self.request.host_call_id, code=-1)
        if reply.host_call_id != self.request.host_call_id:
            reply = protocol.HostReply(host_call_id=self.request.host_call_id, code=reply.code, data=reply.data)
        return reply


class _Wake:
    """An eventfd a host call's done callback signals (from the event loop thread); safe against a late signal
    after the worker is gone (the fd number could be reused)."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._lock = threading.Lock()
        self._closed = False

    def signal(self) -> None:
        with self._lock:
            if not self._closed:
                os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


class _NoHost:
    """Placeholder while a worker starts (no host request can arrive before Ready)."""

    def handle(self, request: protocol.HostRequest) -> protocol.HostReply:
        return protocol.HostReply(host_call_id=request.host_call_id, code=-1)

    def on_log(self, message: protocol.Log | protocol.GuestOutput) -> None:
        pass

    def close(self) -> None:
        pass


def _recv_message(socket: zmq.Socket) -> tuple[bytes, bytes | None]:
    """One message from a ROUTER: the sender's routing id and its one frame (None if it sent several, all dropped).
    Two recv calls and one RCVMORE check instead of recv_multipart (~1 µs per host call)."""
    peer = socket.recv()
    frame = socket.recv()
    if not socket.get(zmq.RCVMORE):
        return peer, frame
    while socket.get(zmq.RCVMORE):
        socket.recv()
    return peer, None


def _decode_or_none(frame: bytes | None) -> protocol.FromWorker | None:
    if frame is None:
        return None
    try:
        return protocol.decode_from_worker(frame)
    except protocol.ProtocolError:
        return None


def _describe(frame: bytes | None) -> str:
    """What a message was, for the audit trail (never its content)."""
    message = _decode_or_none(frame)
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


def _since(started: float) -> float:
    return time.monotonic() - started
