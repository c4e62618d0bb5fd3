"""A worker killed with SIGKILL in the middle of a call (docs/performance.md, "Recovery"): how long until the call
fails, and from then until the next call has succeeded on a new worker (after the restart policy's first
backoff). Baselines of the same run: how long the kernel takes to report a bare child's SIGKILL through a pidfd,
and a cold start of the same plugin without a crash."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import wasmtime

from ops.bench.common import Result, median, scratch, write_plugin
from ops.bench.roundtrip import WAT, EnvHost, measure_kill
from supervisor.modules import ModuleCache
from supervisor.plugin import load_plugin_dir
from supervisor.workers import WorkerPool


def pidfd_floor() -> float:
    """SIGKILL -> the pidfd of a bare child readable (what any supervisor could notice at best)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        pidfd = os.pidfd_open(child.pid)
        started = time.perf_counter()
        os.kill(child.pid, signal.SIGKILL)
        select.select([pidfd], [], [], 10)
        elapsed = time.perf_counter() - started
        os.close(pidfd)
        return elapsed
    finally:
        child.kill()
        child.wait()


def measure(quick: bool) -> list[Result]:
    samples = 2 if quick else 10
    died, recovered, floor, cold = [], [], [], []
    with scratch() as tmp:
        plugin = load_plugin_dir(write_plugin(tmp / "victim", "victim", bytes(wasmtime.wat2wasm(WAT)),
                                              extra_toml='[capabilities]\nenv = ["BENCH_VAR"]\n'))
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        with WorkerPool(runtime, ModuleCache(tmp / "cache"), lambda p: EnvHost()) as pool:
            pool.call(plugin, "noop", [], None).raise_for_error()
            for _ in range(samples):
                fail_s, next_s = measure_kill(pool, plugin)
                died.append(fail_s)
                recovered.append(next_s)
                floor.append(pidfd_floor())
                pool.stop(plugin.name)
                started = time.perf_counter()
                pool.call(plugin, "noop", [], None).raise_for_error()
                cold.append(time.perf_counter() - started)
    ms = lambda samples: median(samples) * 1000  # noqa: E731
    return [
        Result("kill -9 mid-call -> that call fails", ms(died), "ms", "kernel: SIGKILL -> pidfd readable",
               ms(floor), target_value=50.0),
        Result("failed call -> next call succeeds (first crash)", ms(recovered), "ms",
               "cold start without a crash", ms(cold), target_value=300.0,
               note="includes the restart policy's backoff after a first crash"),
    ]
