"""The guest side of a worker: one wasmtime Engine, the supervisor-compiled Module, one Linker, and the
instances export calls run in (tark core ABI §2 calling convention, with tark's weaknesses 3-7 fixed).

Limits: an epoch ticker thread (owned here) advances the engine epoch while guest code runs, and every store gets
a fresh epoch deadline (and fuel, if enabled) per call; `StoreLimits` caps linear memory.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import threading
import time
from typing import Any, Callable, Iterator
from contextlib import contextmanager

import attrs
import wasmtime

from policy.limits import LIVE_STORES
from wasmtime import _ffi
from wasmtime._extern import wrap_extern as _wrap_extern

from worker import abi, protocol
from worker.channel import SupervisorLink, SupervisorLost

FRESH = "fresh"
# Every store reserves the memory cap up front and the worker's RLIMIT_AS holds LIVE_STORES of them
# (docs/limits.md): long-lived instances may take all but one, which stays free for fresh calls.
MAX_NAMED_INSTANCES = LIVE_STORES - 1
MAX_OUTPUT_BYTES_PER_CALL = 256 * 1024
OUTPUT_CHUNK_BYTES = 16 * 1024
DEFAULT_FUEL = 2**62
WASM_PAGE_BYTES = 65536


class CallFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class EpochTicker:
    """Advances the engine epoch every `tick_s` while calls run, and for a short linger after the last one, so a
    burst of calls does not wake this thread once per call; an idle worker's ticker sleeps without wake-ups.
    `ticks` counts the increments, so a deadline can be moved out by the time spent waiting for the host."""

    LINGER_S = 1.0

    def __init__(self, engine: wasmtime.Engine, tick_s: float) -> None:
        self._engine = engine
        self._tick_s = tick_s
        self.ticks = 0  # only the ticker thread writes it
        self._busy = False
        self._last_busy = 0.0
        self._awake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="epoch-ticker", daemon=True)
        self._thread.start()

    @contextmanager
    def running(self) -> Iterator[None]:
        self._busy = True
        if not self._awake.is_set():
            self._awake.set()
        try:
            yield
        finally:
            self._busy = False
            self._last_busy = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._awake.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._awake.wait()
            if self._stop.wait(self._tick_s):
                return
            self._engine.increment_epoch()
            self.ticks += 1
            if not self._busy and time.monotonic() - self._last_busy > self.LINGER_S:
                self._awake.clear()
                if self._busy:  # a call started between the check and the clear
                    self._awake.set()


class RateLimiter:
    """Token bucket for one-way messages (logs and guest output)."""

    def __init__(self, per_second: int) -> None:
        self._rate = float(max(per_second, 1))
        self._tokens = self._rate
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class _Exports:
    """An instance's exports looked up by name on first use: enumerating them all (`Instance.exports`) costs
    about as much as instantiating, and a call needs two or three."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        self._store = store
        self._instance = instance
        self._found: dict[str, object] = {}

    def get(self, name: str) -> object:
        if name not in self._found:
            self._found[name] = _export_by_name(self._store, self._instance, name)
        return self._found[name]


def _export_by_name(store: wasmtime.Store, instance: wasmtime.Instance, name: str) -> object:
    # wasmtime-py has no public by-name lookup; this is the C API's wasmtime_instance_export_get.
    encoded = name.encode()
    item = _ffi.wasmtime_extern_t()
    if not _ffi.wasmtime_instance_export_get(
        store._context(), ctypes.byref(instance._instance), encoded, len(encoded), ctypes.byref(item)
    ):
        return None
    return _wrap_extern(item)


@attrs.define
class _Instance:
    store: wasmtime.Store
    instance: wasmtime.Instance
    exports: _Exports


@attrs.define
class _Allocation:
    ptr: int
    size: int


class GuestRuntime:
    """Runs Invoke requests for one plugin; also the `HostBridge` its tark:* imports talk through."""

    def __init__(self, spec: protocol.WorkerSpec, link: SupervisorLink) -> None:
        self._init_bridge(spec, link)
        if spec.module_fd is not None:  # the supervisor's sealed memfd: what it verified is what loads
            try:
                self._module = wasmtime.Module.deserialize_file(self._engine, f"/proc/self/fd/{spec.module_fd}")
            finally:
                os.close(spec.module_fd)
        else:
            self._module = wasmtime.Module.deserialize_file(self._engine, spec.module_path)
        # Export signatures are the module's: read once, not per instance and call.
        self._signatures: dict[str, _Signature] = {
            export.name: (tuple(str(p) for p in export.type.params), tuple(str(r) for r in export.type.results))
            for export in self._module.exports
            if isinstance(export.type, wasmtime.FuncType)
        }
        linker = wasmtime.Linker(self._engine)
        linker.define_wasi()
        abi.define_tark_imports(linker, self)
        try:
            self._pre = linker.instantiate_pre(self._module)
        except wasmtime.WasmtimeError as exc:
            raise CallFailed("instantiate", f"Failed to instantiate plugin: {spec.plugin}: {_reason(exc)}") from None

    def _init_bridge(self, spec: protocol.WorkerSpec, link: SupervisorLink) -> None:
        """The engine, limits and supervisor link every runtime has, whichever ABI it hosts (worker/component.py)."""
        self._spec = spec
        self._link = link
        self._engine = wasmtime.Engine(protocol.build_engine_config(spec.engine))
        self._host_call_ids = 0
        self._limiter = RateLimiter(spec.log_lines_per_second)
        self._output_budget = MAX_OUTPUT_BYTES_PER_CALL
        self._current_store: wasmtime.Store | None = None
        self.supervisor_lost = False
        self._deadline_ticks = max(1, math.ceil(spec.call_cpu_ms / max(spec.epoch_tick_ms, 1)))
        self._ticker = EpochTicker(self._engine, spec.epoch_tick_ms / 1000) if spec.engine.epoch_interruption else None
        self._deadline_epoch = 0
        # Long-lived instances by name (channel poll loops); each has a `.store` (_Instance, or a component's _Live).
        self._named: dict[str, Any] = {}

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        for name in list(self._named):
            self.end_instance(name)

    # ------------------------------------------------------------------ calls

    def invoke(self, call: protocol.Invoke) -> protocol.InvokeResult:
        self._output_budget = MAX_OUTPUT_BYTES_PER_CALL
        long_lived = call.instance != FRESH
        target: _Instance | None = None
        try:
            with self._guest_running():
                target = self._instance_for(call)
                self._arm(target.store)
                ret, output = self._call(target, call, free_after=long_lived)
            return protocol.InvokeResult(call_id=call.call_id, ret=ret, output=output)
        except CallFailed as failure:
            return self._failed(call, failure.kind, failure.message, target)
        except wasmtime.ExitTrap as exc:
            return self._failed(call, "trap", f"guest called proc_exit({exc.code})", target)
        except wasmtime.Trap as exc:
            kind = "cpu_limit" if exc.trap_code in (wasmtime.TrapCode.INTERRUPT, wasmtime.TrapCode.OUT_OF_FUEL) else "trap"
            if kind == "cpu_limit" and self.supervisor_lost:
                kind = "trap"
            message = (_cpu_message(exc, self._spec) if kind == "cpu_limit"
                       else f"guest trapped: {_reason(exc)}{self._memory_note(target)}")
            return self._failed(call, kind, message, target)
        except wasmtime.WasmtimeError as exc:
            return self._failed(call, "trap", f"guest trapped: {_reason(exc)}{self._memory_note(target)}", target)
        except Exception as exc:  # a worker bug must fail this call, not the worker
            return self._failed(call, "trap", f"internal worker error: {type(exc).__name__}: {exc}", target)
        finally:
            self._current_store = None
            if target is not None and not long_lived:
                target.store.close()

    def _memory_note(self, target: _Instance | None) -> str:
        """Why a guest probably trapped when its memory stands at the cap: its last memory.grow was refused."""
        cap = self._spec.memory_limit_bytes
        try:
            memory = target.exports.get("memory") if target is not None else None
            size = memory.data_len(target.store) if isinstance(memory, wasmtime.Memory) else 0
        except Exception:  # noqa: BLE001 - only a hint
            return ""
        if size + WASM_PAGE_BYTES <= cap:
            return ""
        return f" (its memory reached the {cap // 2**20} MiB cap, memory_limit_bytes: a memory.grow was refused)"

    def _instance_for(self, call: protocol.Invoke) -> Any:
        """A fresh instance, or the call's named long-lived one (made on its first call)."""
        if call.instance == FRESH:
            return self._instantiate()
        target = self._named.get(call.instance)
        if target is None:
            if len(self._named) >= MAX_NAMED_INSTANCES:
                raise CallFailed("instantiate", f"too many live instances (at most {MAX_NAMED_INSTANCES})")
            target = self._named[call.instance] = self._instantiate()
        return target

    def end_instance(self, name: str) -> None:
        instance = self._named.pop(name, None)
        if instance is not None:
            instance.store.close()

    def _failed(self, call: protocol.Invoke, kind: str, message: str, target: Any) -> protocol.InvokeResult:
        if call.instance != FRESH and target is not None and self._named.get(call.instance) is target:
            self.end_instance(call.instance)  # a trapped (or, for a component, any failed) instance is never reused
        return protocol.InvokeResult(call_id=call.call_id, error=protocol.CallError(kind=kind, message=message[:4096]))

    @contextmanager
    def _guest_running(self) -> Iterator[None]:
        if self._ticker is None:
            yield
        else:
            with self._ticker.running():
                yield

    def _instantiate(self) -> _Instance:
        store = wasmtime.Store(self._engine)
        self._current_store = store
        store.set_limits(memory_size=self._spec.memory_limit_bytes)
        wasi = wasmtime.WasiConfig()
        wasi.stdout_custom = lambda data: self._guest_output("stdout", data)
        wasi.stderr_custom = lambda data: self._guest_output("stderr", data)
        store.set_wasi(wasi)
        self._arm(store)
        try:
            instance = self._pre.instantiate(store)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            store.close()
            raise CallFailed("instantiate", f"Failed to instantiate plugin: {self._spec.plugin}: {_reason(exc)}")
        return _Instance(store=store, instance=instance, exports=_Exports(store, instance))

    def _arm(self, store: wasmtime.Store) -> None:
        self._current_store = store
        if self._ticker is not None:
            store.set_epoch_deadline(self._deadline_ticks)  # deadline 0 would trap at once: always set it
            self._deadline_epoch = self._ticker.ticks + self._deadline_ticks
        if self._spec.engine.consume_fuel:
            store.set_fuel(self._spec.fuel_per_call or DEFAULT_FUEL)

    def _call(self, target: _Instance, call: protocol.Invoke, *, free_after: bool) -> tuple[int, bytes | None]:
        store = target.store
        i32 = ("i32",)
        needs_alloc = bool(call.args) or call.result_capacity is not None
        alloc = self._typed_func(target, "alloc", ("i32",), i32) if needs_alloc else None
        if needs_alloc and alloc is None:
            raise CallFailed("missing_export", "Plugin does not export 'alloc' function")
        params = ("i32",) * (2 * len(call.args) + (call.result_capacity is not None))
        export = self._typed_func(target, call.export, params, i32)
        if export is None:
            raise CallFailed("missing_export", _missing_export_message(self._signatures.get(call.export), call.export, params))
        memory = target.exports.get("memory")
        if needs_alloc and not isinstance(memory, wasmtime.Memory):
            raise CallFailed("missing_export", "Plugin has no memory export")

        allocations: list[_Allocation] = []
        flat: list[int] = []
        for arg in call.args:
            ptr = self._alloc(alloc, memory, store, len(arg))
            allocations.append(_Allocation(ptr, len(arg)))
            if arg:
                memory.write(store, arg, ptr)
            flat += [ptr, len(arg)]
        out: _Allocation | None = None
        if call.result_capacity is not None:
            out = _Allocation(self._alloc(alloc, memory, store, call.result_capacity), call.result_capacity)
            allocations.append(out)
            flat.append(out.ptr)

        ret = export(store, *flat)
        output = self._read_output(memory, store, ret, out, call.export) if out is not None else None
        if free_after:
            self._free(target, allocations)
        return ret, output

    def _alloc(self, alloc: wasmtime.Func, memory: wasmtime.Memory, store: wasmtime.Store, size: int) -> int:
        ptr = alloc(store, size)
        # alloc returning 0 (null) or a block that leaves memory would make the host write over the guest's
        # own data or out of bounds (weakness 5).
        if not isinstance(ptr, int) or ptr <= 0 or ptr + size > memory.data_len(store):
            raise CallFailed(
                "bad_result",
                f"alloc({size}) returned an invalid pointer {ptr} (guest memory is {memory.data_len(store)} bytes)",
            )
        return ptr

    @staticmethod
    def _read_output(
        memory: wasmtime.Memory, store: wasmtime.Store, ret: int, out: _Allocation, export: str
    ) -> bytes | None:
        if ret >= 0:
            if ret > out.size:
                raise CallFailed(
                    "bad_result",
                    f"'{export}' returned a result of {ret} bytes, which is larger than the {out.size}-byte buffer",
                )
            data = abi.read_bytes(store, memory, out.ptr, ret)
            if data is None:
                raise CallFailed("bad_result", f"'{export}' returned {ret} bytes that lie outside guest memory")
            return data
        # gemini/chatgpt write {"error": ...} into the buffer and return -len: keep it as diagnostics.
        if -ret <= out.size:
            data = abi.read_bytes(store, memory, out.ptr, -ret)
            if data is not None and _is_error_json(data):
                return data
        return None

    def _typed_func(
        self, target: _Instance, name: str, params: tuple[str, ...], results: tuple[str, ...]
    ) -> wasmtime.Func | None:
        if self._signatures.get(name) != (params, results):
            return None
        func = target.exports.get(name)
        return func if isinstance(func, wasmtime.Func) else None

    def _free(self, target: _Instance, allocations: list[_Allocation]) -> None:
        dealloc = self._typed_func(target, "dealloc", ("i32", "i32"), ())
        if dealloc is None:
            return
        for allocation in reversed(allocations):  # newest first, so a bump allocator gets everything back
            dealloc(target.store, allocation.ptr, allocation.size)

    # ------------------------------------------------------------------ HostBridge

    def request(self, build: Callable[[int], protocol.HostRequest]) -> protocol.HostReply | None:
        if self.supervisor_lost:
            return None
        host_call_id = self._host_call_ids = self._host_call_ids + 1
        frame = protocol.encode(build(host_call_id))
        if len(frame) > protocol.MAX_MESSAGE_BYTES:
            return None
        ticker = self._ticker
        ticks_before = ticker.ticks if ticker is not None else 0
        link = self._link
        try:
            link.send_frame(frame)
            reply = link.receive()
            while type(reply) is not protocol.HostReply or reply.host_call_id != host_call_id:
                reply = link.receive()  # a stale reply or an undecodable frame: not ours
        except SupervisorLost:
            self._abandon_call()
            return None
        if ticker is not None and ticker.ticks != ticks_before:
            self._credit_host_time(ticks_before)
        return reply

    def log(self, level: str, message: str) -> None:
        if self.supervisor_lost or not self._limiter.allow():
            return
        message = message[: protocol.MAX_PAYLOAD_BYTES // 4]
        self._send_one_way(protocol.Log(level=level, message=message))

    def _guest_output(self, stream: str, data: bytes) -> None:
        try:
            data = data[: self._output_budget]
            self._output_budget -= len(data)
            for start in range(0, len(data), OUTPUT_CHUNK_BYTES):
                if self.supervisor_lost or not self._limiter.allow():
                    return
                self._send_one_way(protocol.GuestOutput(stream=stream, data=data[start : start + OUTPUT_CHUNK_BYTES]))
        except Exception:
            pass  # output is best effort and must never raise into wasmtime

    def _send_one_way(self, message: protocol.Log | protocol.GuestOutput) -> None:
        try:
            self._link.send(message, drop_if_busy=True)
        except SupervisorLost:
            self._abandon_call()

    def _credit_host_time(self, ticks_before: int) -> None:
        """Time spent waiting for the supervisor is not guest CPU: move the deadline out by the ticks it took
        (re-arming costs nothing, whereas pausing the ticker would wake its thread on every host call)."""
        if self._ticker is None or self._current_store is None:
            return
        waited = self._ticker.ticks - ticks_before
        if waited > 0:
            self._deadline_epoch += waited
            self._current_store.set_epoch_deadline(max(1, self._deadline_epoch - self._ticker.ticks))

    def _abandon_call(self) -> None:
        """Nobody will read the result: make the running guest trap at its next epoch check."""
        self.supervisor_lost = True
        if self._current_store is not None and self._spec.engine.epoch_interruption:
            self._current_store.set_epoch_deadline(0)


_Signature = tuple[tuple[str, ...], tuple[str, ...]]


def _missing_export_message(found: _Signature | None, name: str, params: tuple[str, ...]) -> str:
    message = f"Plugin does not export '{name}' function"
    if found is not None:
        found_params, found_results = found
        message += (
            f" (it has type ({', '.join(found_params)}) -> ({', '.join(found_results)}),"
            f" the call needs ({', '.join(params)}) -> (i32))"
        )
    return message


def _is_error_json(data: bytes) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and "error" in value


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).strip()


def _cpu_message(exc: wasmtime.Trap, spec: protocol.WorkerSpec) -> str:
    if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
        return f"guest ran out of fuel ({spec.fuel_per_call} units per call)"
    return f"guest exceeded its CPU budget of {spec.call_cpu_ms} ms and was interrupted"
