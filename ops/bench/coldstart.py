"""Worker start and plugin cold start (docs/performance.md, "Worker start" and "Cold start").

- worker ready: fork request to the fork server -> the worker's Ready (sandbox on, module loaded, connected),
  against a bare child of the same fork server that only reports that it runs;
- cold start: the first call of a plugin whose worker is not running (module from the compiled-module cache,
  worker start, one no-op call), against the same with an empty cache (the module is compiled first).
"""

from __future__ import annotations

import os
import secrets
import select
import time
from pathlib import Path

import wasmtime
import zmq

from ops.bench.common import NoHost, Result, median, scratch, write_plugin
from supervisor.forkserver import ForkServer
from supervisor.modules import ModuleCache
from supervisor.plugin import load_plugin_dir
from supervisor.workers import WorkerPool
from worker import protocol
from worker.main import run

FUNCTIONS = 200  # a module of some size, so that compiling it costs what a small real plugin's does


def plugin_wat(functions: int, salt: int = 0) -> str:
    bodies = "".join(
        f'(func $f{i} (param $x i32) (result i32) (local $i i32) (loop $l (local.set $x (i32.add (i32.mul '
        f'(local.get $x) (i32.const {i + 3})) (i32.const {salt}))) (local.set $i (i32.add (local.get $i) '
        f'(i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const 8)))) (local.get $x))\n'
        for i in range(functions))
    return (f'(module (memory (export "memory") 1)\n{bodies}'
            '(func (export "alloc") (param i32) (result i32) (i32.const 1024))\n'
            f'(func (export "noop") (result i32) (drop (call $f{functions - 1} (i32.const 1))) (i32.const 0)))')


def cpu_seconds(pid: int) -> float:
    """CPU time all threads of `pid` have used so far (the scheduler's nanosecond count, not clock ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as file:
            total += int(file.read().split()[0])
    return total / 1e9


def ready_times(tmp: Path, samples: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Wall and CPU time of (fork request -> Ready of a real worker) and of (fork request -> a bare child's first
    byte), interleaved."""
    cache = ModuleCache(tmp / "ready-cache")
    wasm = tmp / "ready.wasm"
    wasm.write_bytes(bytes(wasmtime.wat2wasm(plugin_wat(FUNCTIONS))))
    settings = cache.settings_for(256 * 2**20)  # the default memory cap (protocol.WorkerSpec)
    server = ForkServer()
    context = zmq.Context()
    worker_s, bare_s, worker_cpu, bare_cpu = [], [], [], []
    try:
        from ops.bench import idle_child

        for index in range(samples + 1):  # the first of each warms up (the fork server's own start)
            module = cache.load(wasm, "ready", settings)
            endpoint = tmp / f"ready-{index}.sock"
            socket = context.socket(zmq.ROUTER)
            socket.bind(f"ipc://{endpoint}")
            spec = protocol.WorkerSpec(plugin="ready", endpoint=f"ipc://{endpoint}", module_path=str(module.path),
                                       module_fd=protocol.MODULE_FD, engine=settings,
                                       token=secrets.token_bytes(protocol.TOKEN_BYTES))
            started = time.perf_counter()
            worker = server.start(run, protocol.encode(spec), module.fd)
            _peer, frame = socket.recv_multipart()
            ready = time.perf_counter() - started
            ready_cpu = cpu_seconds(worker.pid)
            if not isinstance(protocol.decode_from_worker(frame), protocol.Ready):
                raise RuntimeError(f"the worker did not start: {frame[:200]!r}")
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            started = time.perf_counter()
            bare = server.start(idle_child.signal_ready, b"", write_end)
            os.close(write_end)
            select.select([read_end], [], [], 10)
            bare_ready = time.perf_counter() - started
            bare_ready_cpu = cpu_seconds(bare.pid)
            os.close(read_end)
            for process in (worker, bare):
                process.kill()
                process.join()
                process.close()
            socket.close(linger=0)
            if index:
                worker_s.append(ready)
                bare_s.append(bare_ready)
                worker_cpu.append(ready_cpu)
                bare_cpu.append(bare_ready_cpu)
    finally:
        server.close()
        context.destroy(linger=0)
    return worker_s, bare_s, worker_cpu, bare_cpu


def cold_start_times(tmp: Path, samples: int) -> tuple[list[float], list[float]]:
    """(first call with the module in the cache, first call of a module never compiled), interleaved."""
    wasm = bytes(wasmtime.wat2wasm(plugin_wat(FUNCTIONS)))
    cached = load_plugin_dir(write_plugin(tmp / "cached", "cached", wasm))
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700)
    warm, uncached = [], []
    with WorkerPool(runtime, ModuleCache(tmp / "cache"), lambda plugin: NoHost()) as pool:
        pool.call(cached, "noop", [], None).raise_for_error()  # fork server up, module compiled and cached
        for index in range(samples):
            pool.stop(cached.name)
            started = time.perf_counter()
            pool.call(cached, "noop", [], None).raise_for_error()
            warm.append(time.perf_counter() - started)
            # A module no cache has seen: same code, another salt.
            fresh = load_plugin_dir(write_plugin(tmp / f"fresh{index}", f"fresh{index}",
                                                 bytes(wasmtime.wat2wasm(plugin_wat(FUNCTIONS, index + 1)))))
            started = time.perf_counter()
            pool.call(fresh, "noop", [], None).raise_for_error()
            uncached.append(time.perf_counter() - started)
            pool.stop(fresh.name)
    return warm, uncached


def measure(quick: bool) -> list[Result]:
    samples = 5 if quick else 40
    with scratch() as tmp:
        worker_s, bare_s, worker_cpu, bare_cpu = ready_times(tmp, samples)
        warm, uncached = cold_start_times(tmp, 3 if quick else 15)
    ms = lambda samples: median(samples) * 1000  # noqa: E731
    return [
        Result("worker ready from the fork server (sandboxed, module loaded, connected)", ms(worker_s), "ms",
               "bare fork-server child running", ms(bare_s), target_value=10.0,
               note="fork request to Ready, median; the worker applies every lockdown layer. On a loaded machine "
                    "this is mostly waiting for a CPU: see the CPU-time figure"),
        Result("worker start CPU time, all its threads (fork to Ready)", ms(worker_cpu), "ms",
               "bare fork-server child", ms(bare_cpu), target_value=10.0,
               note="from /proc/<pid>/task/*/schedstat: independent of how long the worker waited for a CPU"),
        Result(f"cold start + first call, compiled-module cache warm ({FUNCTIONS}-function module)", ms(warm),
               "ms", "same, module never compiled", ms(uncached), target_value=50.0),
    ]
