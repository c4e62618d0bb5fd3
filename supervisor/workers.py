"""The worker pool: one slot per plugin, holding its running worker across calls and restarts.

`WorkerPool.call` takes the plugin's slot (one call at a time per worker), starts a worker when there is none
(supervisor/worker_process.py, after the backoff of the pool's RestartPolicy), and drives the call on it
(supervisor/call_driver.py). A dead worker fails its call at once and is replaced on the next call; too many
crashes in the policy's period park the plugin (calls fail at once) until `reset(name)`. Idle workers are
stopped after `idle_timeout_s`, and watched meanwhile for messages they should not send. Before a start,
`admission` says whether one more worker fits (descriptors, memory, the admin policy's max_workers); if not, workers
idle for at least `pressure_idle_s` are stopped, least recently used first, and when none is left the call fails with NO_CAPACITY while every
running worker goes on (docs/limits.md, "Many plugins"). `status` reports every slot.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import logging

import attrs

from policy.restart import Parked, RestartPolicy, StartAfter, decide, recent
from supervisor.call_driver import Call, CallDriver
from supervisor.admission import Admission
from supervisor.call_stats import PluginStats
from supervisor.modules import ModuleCache
from supervisor.placement import CpuPlacement
from supervisor.plugin import InstalledPlugin
from supervisor.worker_process import (  # noqa: F401 - the pool's public names are importable from here
    CANCELLED,
    DEFAULT_WORKER_UIDS,
    INVALID_MESSAGE,
    PARKED,
    RCVHWM,
    RESTARTING,
    START_FAILED,
    STOP_GRACE_S,
    TIMEOUT,
    WORKER_DIED,
    Fail,
    HostHandler,
    SecurityEvents,
    Worker,
    WorkerLimits,
    WorkerStarter,
    death_message,
    log_security_event,
)
from worker import protocol
from worker.main import run

log = logging.getLogger(__name__)

NO_CAPACITY = "no_capacity"  # a new worker would not fit; nothing idle was left to stop
PRESSURE_IDLE_S = 10.0
DEFAULT_CALL_TIMEOUT_S = 120.0
IDLE_WATCH_S = 1.0  # how often idle workers are checked for messages they should not send


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


@attrs.define
class _Slot:
    """Everything the pool keeps about one plugin across worker restarts."""

    name: str
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    worker: Worker | None = None
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
        admission: Callable[[int], str | None] | None = None,
        pressure_idle_s: float = PRESSURE_IDLE_S,
        colocate: bool = True,
    ) -> None:
        """`pinned_wasm(plugin)` is the approved sha256 of its wasm (supervisor/consent): the bytes compiled for a
        worker must have it, so a file swapped after the supervisor's pin check is never run.
        `required_layers`: sandbox layers a plugin's worker must report, else it is not used (the admin policy's
        [lockdown] require). `worker_uids`: the uids workers drop to, one per running worker; by default
        DEFAULT_WORKER_UIDS when the supervisor runs as root, else none (docs/security.md, "Own uid").
        `admission(running)`: why one more worker may not start while `running` run, or None (default: the
        descriptor and memory checks of supervisor/admission.py without an admin policy). `pressure_idle_s`: how
        long a worker must have been idle to be stopped to make room for another (none is stopped to start one that
        would then be stopped in turn: a plugin used a moment ago is likely used again).
        `colocate`: give each worker a home CPU where both ends of its calls run (supervisor/placement.py)."""
        self._pressure_idle_s = pressure_idle_s
        self._admission = admission or Admission().refusal
        self._admit_lock = threading.Lock()
        self._starting = 0  # starts admitted and not finished (they count as running)
        self._host_factory = host_factory
        self._idle_timeout_s = idle_timeout_s
        self._call_timeout_s = call_timeout_s
        self._limits = limits or (lambda plugin: WorkerLimits())
        self._restart = restart
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._call_ids = 0
        self._closed = threading.Event()
        self._interrupt_fd = os.eventfd(0, os.EFD_CLOEXEC)  # readable once the pool closes: calls end at once
        self._starter = WorkerStarter(
            runtime_dir, module_cache, start_timeout_s=start_timeout_s, worker_entry=worker_entry,
            security_events=security_events, pinned_wasm=pinned_wasm, required_layers=required_layers,
            worker_uids=worker_uids if worker_uids is not None else (
                DEFAULT_WORKER_UIDS if os.geteuid() == 0 else range(0)),
            interrupt_fd=self._interrupt_fd,
            placement=CpuPlacement() if colocate else None,
        )
        self._fork_server = self._starter.fork_server  # tests and ops/bench reach for it
        self._driver = CallDriver(self._interrupt_fd, security_events, frozenset(os.sched_getaffinity(0)))
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
        call = Call(plugin.name, export, timeout_s or self._call_timeout_s, started, cancel_fd)
        slot = self._slot(plugin.name)
        if not slot.lock.acquire(timeout=max(0.0, call.deadline - time.monotonic())):
            return CallOutcome(None, None, TIMEOUT, call.busy_message(), None, _since(started))
        try:
            slot.last_used = time.monotonic()
            slot.calls += 1
            worker: Worker | None = None
            try:
                worker = self._ensure_worker(slot, plugin, call)
                self._driver.expect_quiet(worker)
                invoke = protocol.Invoke(
                    call_id=self._next_call_id(),
                    export=export,
                    args=list(args),
                    result_capacity=result_capacity,
                    instance=instance,
                )
                result = self._driver.drive(worker, invoke, call)
            except Fail as failure:
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
        return self._starter.process_ids()

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
        self._starter.close()
        with self._slots_lock:
            os.close(self._interrupt_fd)
            self._interrupt_fd = -1

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def _ensure_worker(self, slot: _Slot, plugin: InstalledPlugin, call: Call) -> Worker:
        worker = slot.worker
        if worker is not None and not worker.process.is_alive():
            message = death_message(worker, "while idle")
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
            self._admit(slot)
            try:
                worker = self._starter.start(plugin, self._limits(plugin), self._host_factory, call)
            finally:
                with self._admit_lock:
                    self._starting -= 1
            worker.stats = slot.stats
            slot.worker = worker
            slot.crashed = False
        return worker

    def _admit(self, slot: _Slot) -> None:
        """Make sure one more worker fits, stopping idle ones (least recently used first) while it does not; the
        caller holds `slot.lock` and must decrement `_starting` once its start is over."""
        with self._admit_lock:
            while True:
                with self._slots_lock:
                    others = [s for s in self._slots.values() if s.worker is not None and s is not slot]
                why = self._admission(len(others) + self._starting)
                if why is None:
                    self._starting += 1
                    return
                idle_since = time.monotonic() - self._pressure_idle_s
                candidates = sorted((s for s in others if s.last_used <= idle_since), key=lambda s: s.last_used)
                if not self._stop_least_recently_used(candidates, why):
                    raise Fail(NO_CAPACITY, f"cannot start a worker for plugin '{slot.name}': {why}", kill=False)

    def _stop_least_recently_used(self, candidates: list[_Slot], why: str) -> bool:
        for victim in candidates:
            if not victim.lock.acquire(blocking=False):
                continue  # in a call: not idle
            try:
                if victim.worker is None:
                    continue
                log.info("stopping the idle worker of plugin '%s' (least recently used) to make room: %s",
                         victim.name, why)
                self._stop_worker(victim)
                return True
            finally:
                victim.lock.release()
        return False

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

    def _await_restart(self, slot: _Slot, call: Call) -> None:
        """Apply the restart policy before a start: fail if parked, wait out the backoff after a crash."""
        if slot.parked is not None:
            raise Fail(PARKED, slot.parked, kill=False)
        decision = decide(self._restart, slot.crash_times, time.monotonic())
        if not isinstance(decision, StartAfter):
            return
        if time.monotonic() + decision.delay_s > call.deadline:
            raise Fail(
                RESTARTING,
                f"plugin '{slot.name}' is restarting after a crash; its next start is in {decision.delay_s:.1f} s,"
                f" after this call's {call.timeout_s:g} s deadline; try again then",
                kill=False,
            )
        if self._closed.wait(decision.delay_s):
            raise Fail(START_FAILED, "the worker pool is closed", kill=False)

    def _stop_worker(self, slot: _Slot) -> None:
        """Graceful stop (see WorkerStarter.stop)."""
        worker, slot.worker = slot.worker, None
        if worker is not None:
            self._starter.stop(worker)

    def _discard(self, slot: _Slot) -> None:
        """Drop a worker that ended abnormally or can no longer be trusted (the caller records the crash)."""
        worker, slot.worker = slot.worker, None
        if worker is not None:
            self._starter.terminate(worker)

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
        """End an idle worker that sends anything (see CallDriver.expect_quiet)."""
        worker = slot.worker
        if worker is None or worker.peer is None:
            return
        try:
            self._driver.expect_quiet(worker)
        except Fail as failure:
            self._discard(slot)
            slot.last_error = failure.message
            self._record_crash(slot, failure.message)


def _since(started: float) -> float:
    return time.monotonic() - started
