"""Many idle plugins in one supervisor (docs/performance.md, "Scale"): with 1, 10, 100 and 1000 plugins running,
the supervisor's descriptors per worker, each idle worker's unique memory (USS), and how long gathering
`tark supervisor status` takes (the pool's status plus each worker's memory and CPU, as the status command reads
them). The run starts, as a daemon does, from a soft RLIMIT_NOFILE of 1024 raised to the hard limit
(supervisor/daemon.py), and counts the plugins that are running at the end.

Workers run the real PluginHost (audit trail, capabilities) and a guest that imports tark:storage.
"""

from __future__ import annotations

import os
import resource
import statistics
import time

import attrs
from concurrent.futures import ThreadPoolExecutor

import wasmtime

from ops.bench.common import Result, scratch, write_plugin
from ops.bench.idle_memory import WAT, baseline_uss, uss_mib
from supervisor.daemon import raise_open_files_limit
from supervisor.host import PluginHost
from supervisor.modules import ModuleCache
from supervisor.plugin import load_plugin_dir
from supervisor.worker_usage import WorkerUsage
from supervisor.workers import WorkerPool

USS_SAMPLE = 30  # workers whose USS is read at each size (reading smaps costs milliseconds per process)
STARTERS = 4  # supervisor threads starting workers at once


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def status_seconds(pool: WorkerPool, usage: WorkerUsage) -> float:
    """What the daemon does for `status`: the pool's status plus each worker's memory and CPU (the USS of a worker
    that ran no call since it was last measured comes from the daemon's cache)."""
    started = time.perf_counter()
    workers = usage.annotate([attrs.asdict(s) for s in pool.status()])
    elapsed = time.perf_counter() - started
    if not all(w["uss_mib"] is not None for w in workers if w["pid"]):
        raise RuntimeError("status could not read a worker's memory")
    return elapsed


def measure(quick: bool) -> list[Result]:
    sizes = (1, 3, 6) if quick else (1, 10, 100, 1000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        raise_open_files_limit()  # what the daemon does at start
        return _measure(sizes)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _measure(sizes: tuple[int, ...]) -> list[Result]:
    wasm = bytes(wasmtime.wat2wasm(WAT))
    fds: dict[int, float] = {}
    uss: dict[int, float] = {}
    status: dict[int, float] = {}
    first_status: dict[int, float] = {}
    with scratch() as tmp:
        plugins = [load_plugin_dir(write_plugin(tmp / "plugins" / f"p{i}", f"idle-{i}", wasm))
                   for i in range(max(sizes))]
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        audit = tmp / "audit.log"
        with WorkerPool(runtime, ModuleCache(tmp / "cache"), lambda p: PluginHost(p, audit_path=audit)) as pool:
            pool.call(plugins[0], "ping", [], None).raise_for_error()  # fork server up, module compiled
            pool.stop(plugins[0].name)
            before = open_fds()
            bare = baseline_uss(pool)
            pids: list[int] = []
            with ThreadPoolExecutor(STARTERS) as starters:
                for size in sizes:
                    pids += starters.map(lambda p: pool.call(p, "ping", [], None).raise_for_error().worker_pid,
                                         plugins[len(pids):size])
                    time.sleep(1.0)
                    fds[size] = (open_fds() - before) / size
                    sample = pids[:: max(1, size // USS_SAMPLE)][:USS_SAMPLE]
                    uss[size] = statistics.median(uss_mib(pid) for pid in sample)
                    usage = WorkerUsage()  # a daemon's: the first status measures every worker
                    first_status[size] = status_seconds(pool, usage)
                    status[size] = min(status_seconds(pool, usage) for _ in range(3))
            running = sum(1 for s in pool.status() if s.state == "running")
    largest = max(sizes)
    results = [Result(f"supervisor descriptors per worker, {size} plugins", fds[size], "fds",
                      "with 1 plugin", fds[1]) for size in sizes]
    results += [Result(f"idle worker USS, {size} plugins", uss[size], "MiB", "bare fork-server child", bare,
                       target_value=5.0) for size in sizes]
    results += [
        Result(f"`supervisor status` data for {largest} workers", status[largest] * 1000, "ms",
               "for 1 worker", status[1] * 1000,
               note="the pool's status plus each worker's memory and CPU as the daemon gathers them "
                    "(supervisor/worker_usage.py), without the control socket round trip and printing"),
        Result(f"first `supervisor status` data for {largest} workers (every USS read)", first_status[largest] * 1000,
               "ms", "for 1 worker", first_status[1] * 1000,
               note="a worker's USS is read again only after it ran a call; each read walks its address space"),
        Result(f"plugins running at the end, of {largest} started from a soft fd limit of 1024", running,
               "plugins", "started", largest, target_ratio=1.0, higher_is_better=True,
               note="the soft RLIMIT_NOFILE starts at 1024 and is raised to the hard limit as the daemon does"),
    ]
    return results
