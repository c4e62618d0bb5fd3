"""Component plugins against core modules (docs/components.md): the same work through both ABIs, same run.

- host call: an export making N `storage.get` calls through the broker, minus the same export making none, per
  call: the WIT import (wasmtime-py lifts and lowers the values, worker/component_imports.py) against the core
  ABI's raw import (worker/abi.py); once answered by a minimal host (a fixed 64-byte value: the ABI's own cost),
  once by the real PluginHost (SQLite and the audit record included);
- export call: the export making no host call (argument and result conversion, worker/component_values.py);
- cold start: the first call of a plugin whose worker is not running, compiled module in the cache.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import wasmtime

from ops.bench.common import Result, alternate, median, scratch, write_plugin
from ops.bench.roundtrip import EnvHost
from supervisor.host import PluginHost
from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin, load_plugin_dir
from supervisor.workers import WorkerPool

ROOT = Path(__file__).resolve().parents[2]

# hook_on_error(text) / hook-plugin#on-error(text): one storage.get per byte of the text, then return.
CORE = """(module
  (import "tark:storage" "get" (func $get (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "k")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hook_on_error") (param $p i32) (param $n i32) (result i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (drop (call $get (i32.const 16) (i32.const 1) (i32.const 4096)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (i32.const 0)))"""
COMPONENT = """(module
  (import "tark:plugin/storage@0.1.0" "get" (func $get (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "k")
  (global $heap (mut i32) (i32.const 8192))
  (func (export "cabi_realloc") (param i32 i32 i32) (param $n i32) (result i32)
    (global.get $heap) (global.set $heap (i32.add (global.get $heap) (local.get $n))))
  (func (export "tark:plugin/hook-plugin@0.1.0#on-error") (param $p i32) (param $n i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (call $get (i32.const 16) (i32.const 1) (i32.const 4096))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next))))
  (func (export "tark:plugin/hook-plugin@0.1.0#on-tool-execute") (param i32 i32 i32 i32))
  (func (export "tark:plugin/hook-plugin@0.1.0#on-tool-complete") (param i32 i32 i32 i32)))"""


def _component_wasm() -> bytes:
    spec = importlib.util.spec_from_file_location("examples_build", ROOT / "examples" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.component_from_core(bytes(wasmtime.wat2wasm(COMPONENT)), "hook-world")


def _figures(pool: WorkerPool, plugins: dict[str, InstalledPlugin], host_calls: int,
             rounds: int) -> tuple[list[float], list[float], list[float], list[float], list[float], list[float]]:
    def call(plugin: InstalledPlugin, n: int) -> float:
        started = time.perf_counter()
        pool.call(plugin, "hook_on_error", [b"x" * n], None).raise_for_error()
        return time.perf_counter() - started

    def per_host_call(abi: str) -> list[float]:
        plugin = plugins[abi]
        empty = median([call(plugin, 0) for _ in range(5)])
        full = median([call(plugin, host_calls) for _ in range(3)])
        return [(full - empty) / host_calls]

    def export_only(abi: str) -> list[float]:
        return [median([call(plugins[abi], 0) for _ in range(10)])]

    def cold(abi: str) -> list[float]:
        pool.stop(plugins[abi].name)
        return [call(plugins[abi], 0)]

    for abi in plugins:
        call(plugins[abi], 1)  # worker up, module compiled and cached
    core_host, comp_host = alternate(rounds, lambda: per_host_call("core"), lambda: per_host_call("component"))
    core_call, comp_call = alternate(rounds, lambda: export_only("core"), lambda: export_only("component"))
    core_cold, comp_cold = alternate(rounds, lambda: cold("core"), lambda: cold("component"))
    return core_host, comp_host, core_call, comp_call, core_cold, comp_cold


def measure(quick: bool) -> list[Result]:
    host_calls = 20 if quick else 200
    rounds = 3 if quick else 15
    storage = "[capabilities]\nstorage = true\n"
    with scratch() as tmp:
        plugins = {
            "core": load_plugin_dir(write_plugin(tmp / "core", "bench-core", bytes(wasmtime.wat2wasm(CORE)),
                                                 plugin_type="hook", extra_toml=storage)),
            "component": load_plugin_dir(write_plugin(tmp / "comp", "bench-comp", _component_wasm(),
                                                      plugin_type="hook", extra_toml=storage)),
        }
        (tmp / "run").mkdir(mode=0o700)
        with WorkerPool(tmp / "run", ModuleCache(tmp / "cache"), lambda plugin: EnvHost()) as pool:
            bare_core, bare_comp, *_ = _figures(pool, plugins, host_calls, rounds)
        (tmp / "run2").mkdir(mode=0o700)
        with WorkerPool(tmp / "run2", ModuleCache(tmp / "cache"),
                        lambda plugin: PluginHost(plugin, home=str(tmp), audit_path=tmp / "audit.db")) as pool:
            core_host, comp_host, core_call, comp_call, core_cold, comp_cold = _figures(pool, plugins, host_calls,
                                                                                         rounds)
    us = lambda samples: median(samples) * 1e6  # noqa: E731
    ms = lambda samples: median(samples) * 1e3  # noqa: E731
    how = f"(export with {host_calls} host calls - export with none) / {host_calls}, median of {rounds}"
    return [
        Result("component host call, minimal host (WIT storage.get -> broker -> 64-byte answer -> guest)",
               us(bare_comp), "µs", "core-ABI host call, same host", us(bare_core), note=how),
        Result("component host call, real PluginHost (SQLite read and audit record)", us(comp_host), "µs",
               "core-ABI host call, same request", us(core_host), note=how),
        Result("component export call, no host call (Invoke -> WIT call -> InvokeResult)", us(comp_call), "µs",
               "core-ABI export call", us(core_call), note="whole pool.call round trip, fresh Store per call"),
        Result("component cold start + first call (compiled module cached)", ms(comp_cold), "ms",
               "core module cold start + first call", ms(core_cold), target_value=50.0,
               note="worker stopped before each sample; fork server warm"),
    ]
