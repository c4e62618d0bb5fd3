"""The guest side of a worker whose plugin is a component (wit/tark.wit), next to worker/engine.py's core modules.

The supervisor says which kind it compiled (WorkerSpec.component, read from the binary's preamble) and calls both
the same way: a core export name, string arguments, a result capacity. The table of policy/abi.py names the WIT
function behind each core export; worker/component_values.py converts arguments and results; the imports go
over the same broker as the core ABI's (worker/component_imports.py). Limits are the core ones: the epoch
deadline (and fuel) armed before every call, StoreLimits on linear memory, the same output budget.

A trap, a CPU stop, a refused memory.grow that traps, a failed conversion: wasmtime poisons the whole Store, so
the Store is dropped and the next call instantiates afresh in a new one (docs/components.md).
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import wasmtime
from wasmtime import component

from policy import abi
from worker import protocol
from worker.channel import SupervisorLink
from worker.component_imports import define_imports
from worker.component_values import BadValue, to_core, to_wit_args
from worker.engine import FRESH, MAX_OUTPUT_BYTES_PER_CALL, CallFailed, GuestRuntime, _reason

# wasmtime reports component traps as WasmtimeError with the trap's text (no trap code).
_CPU_STOPS = ("wasm trap: interrupt", "all fuel consumed")


@attrs.define
class _Live:
    store: wasmtime.Store
    instance: component.Instance
    funcs: dict[str, component.Func | None]


class ComponentRuntime(GuestRuntime):
    """Runs Invoke requests against a component; the HostBridge (broker, logs, deadlines) is GuestRuntime's."""

    def __init__(self, spec: protocol.WorkerSpec, link: SupervisorLink) -> None:
        self._init_bridge(spec, link)
        if spec.module_fd is not None:
            try:
                self._component = component.Component.deserialize_file(self._engine, f"/proc/self/fd/{spec.module_fd}")
            finally:
                os.close(spec.module_fd)
        else:
            self._component = component.Component.deserialize_file(self._engine, spec.module_path)
        self._linker = component.Linker(self._engine)
        # WASI p2 is linked so a guest built against it instantiates; its store gets a WasiConfig that grants
        # nothing (no preopens, no environment, no sockets): without one the first WASI call aborts the process.
        self._linker.add_wasip2()
        define_imports(self._linker, self)

    def invoke(self, call: protocol.Invoke) -> protocol.InvokeResult:
        self._output_budget = MAX_OUTPUT_BYTES_PER_CALL
        long_lived = call.instance != FRESH
        target: _Live | None = None
        try:
            entry = abi.resolve_export(call.export)
            if entry is None:
                raise CallFailed("missing_export", f"Plugin does not export '{call.export}' function")
            try:
                args = to_wit_args(entry, call.args)
            except BadValue as exc:
                raise CallFailed("bad_result", f"cannot pass the arguments of '{entry.wit_name}': {exc}") from None
            with self._guest_running():
                target = self._instance_for(call)
                self._arm(target.store)
                func = self._func(target, entry)
                value = func(target.store, *args)
            return self._result(call, entry, value)
        except CallFailed as failure:
            return self._failed(call, failure.kind, failure.message, target)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            reason = _reason(exc)
            if any(stop in reason for stop in _CPU_STOPS) and not self.supervisor_lost:
                kind = "cpu_limit"
                message = (f"guest ran out of fuel ({self._spec.fuel_per_call} units per call)"
                           if "fuel" in reason else
                           f"guest exceeded its CPU budget of {self._spec.call_cpu_ms} ms and was interrupted")
            else:
                kind, message = "trap", f"guest trapped: {reason}"
            return self._failed(call, kind, message, target)
        except (TypeError, ValueError, AttributeError) as exc:  # the component's export has another type
            return self._failed(call, "bad_result",
                                          f"'{call.export}' does not have the type wit/tark.wit gives it: {exc}", target)
        except Exception as exc:  # a worker bug must fail this call, not the worker
            return self._failed(call, "trap", f"internal worker error: {type(exc).__name__}: {exc}", target)
        finally:
            self._current_store = None
            if target is not None and not long_lived:
                target.store.close()

    def _result(self, call: protocol.Invoke, entry: abi.Export, value: Any) -> protocol.InvokeResult:
        try:
            ret, output, error_text = to_core(entry, value)
        except BadValue as exc:
            raise CallFailed("bad_result", f"'{entry.wit_name}' returned {exc}") from None
        if error_text is not None:
            self.log("error", f"{entry.wit_name} failed: {error_text}")
        if call.result_capacity is None:
            output = None
        elif output is not None and len(output) > call.result_capacity:
            if ret >= 0:
                raise CallFailed("bad_result", f"'{call.export}' returned a result of {len(output)} bytes, which is "
                                               f"larger than the {call.result_capacity}-byte buffer")
            output = None  # diagnostics that do not fit are dropped, as the core ABI's would be
        return protocol.InvokeResult(call_id=call.call_id, ret=ret, output=output)

    def _instantiate(self) -> _Live:
        store = wasmtime.Store(self._engine)
        self._current_store = store
        store.set_limits(memory_size=self._spec.memory_limit_bytes)
        wasi = wasmtime.WasiConfig()  # grants nothing; only what the guest prints is kept, as for core modules
        wasi.stdout_custom = lambda data: self._guest_output("stdout", data)
        wasi.stderr_custom = lambda data: self._guest_output("stderr", data)
        store.set_wasi(wasi)
        self._arm(store)
        try:
            instance = self._linker.instantiate(store, self._component)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            store.close()
            raise CallFailed("instantiate", f"Failed to instantiate plugin: {self._spec.plugin}: {_reason(exc)}")
        return _Live(store=store, instance=instance, funcs={})

    def _func(self, target: _Live, entry: abi.Export) -> component.Func:
        if entry.wit_name not in target.funcs:
            store = target.store
            interface = target.instance.get_export_index(store, abi.interface_name(entry.interface))
            index = None if interface is None else target.instance.get_export_index(store, entry.function, interface)
            target.funcs[entry.wit_name] = None if index is None else target.instance.get_func(store, index)
        func = target.funcs[entry.wit_name]
        if func is None:
            raise CallFailed("missing_export", f"Plugin does not export '{entry.wit_name}' function "
                                               f"(of {abi.interface_name(entry.interface)})")
        return func
