"""Many idle plugins: unique memory per worker and start time, against a bare forked Python in the same run.

    .venv/bin/python ops/bench/idle_memory.py [--plugins 100]
    (report figure: .venv/bin/python -m ops.bench --topics idle_memory)

Starts one worker per plugin through the real `WorkerPool` (fork server preloaded with wasmtime), makes one call
on each so every worker has compiled code mapped and an instance run, then leaves them idle and measures each
worker's USS (memory only that process holds; what stopping it frees). The baseline is a child forked from the same
fork server running nothing (supervisor/forkserver.py), measured the same way. Design targets: idle worker
USS <= 5 MiB; 100 idle plugins on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository's packages

from supervisor.host import PluginHost  # noqa: E402
from supervisor.modules import ModuleCache  # noqa: E402
from supervisor.plugin import load_plugin_dir  # noqa: E402
from supervisor.workers import WorkerPool  # noqa: E402

WAT = """
(module
  (import "tark:storage" "get" (func $get (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "ping") (result i32) (i32.const 0)))
"""


def uss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_full_info().uss / 2**20


def baseline_uss(pool: WorkerPool) -> float:
    """USS of a do-nothing child of the fork server the pool started (same preloads, same scrubbed environment)."""
    from ops.bench import idle_child

    process = pool._fork_server.start(idle_child.idle, b"5")
    time.sleep(0.5)
    try:
        return uss_mib(process.pid)
    finally:
        process.kill()
        process.join()
        process.close()


def idle_usses(count: int) -> tuple[list[float], float, float]:
    """(USS of each of `count` idle workers after one call each, a bare fork-server child's USS, seconds to start
    them all with their first call)."""
    wasm = bytes(wasmtime.wat2wasm(WAT))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plugins = []
        for index in range(count):
            directory = tmp / f"p{index}"
            directory.mkdir()
            (directory / "plugin.toml").write_text(f'[plugin]\nname = "idle-{index}"\nversion = "0.1.0"\ntype = "tool"\n')
            (directory / "plugin.wasm").write_bytes(wasm)
            plugins.append(load_plugin_dir(directory))
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        cache = ModuleCache(tmp / "cache")
        with WorkerPool(runtime, cache, lambda plugin: PluginHost(plugin, audit_path=tmp / "audit.log")) as pool:
            started = time.perf_counter()
            pids = [pool.call(plugin, "ping", [], None).raise_for_error().worker_pid for plugin in plugins]
            elapsed = time.perf_counter() - started
            time.sleep(1.0)
            return [uss_mib(pid) for pid in pids], baseline_uss(pool), elapsed


def measure(quick: bool) -> list:
    from ops.bench.common import Result

    usses, base, _elapsed = idle_usses(3 if quick else 20)
    return [Result("idle worker USS (after one call)", statistics.median(usses), "MiB",
                   "bare fork-server child", base, target_value=5.0,
                   note="USS: the memory only that process holds, what stopping it frees; median of the workers. "
                        "Most of it is pages shared with the fork server that Python's reference counting writes "
                        "to (docs/performance.md)")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugins", type=int, default=100)
    args = parser.parse_args()
    usses, base, elapsed = idle_usses(args.plugins)
    print(f"idle workers running                      {len(usses)}")
    print(f"start + first call, all of them            {elapsed:8.2f} s ({elapsed / len(usses) * 1000:.1f} ms each)")
    print(f"worker USS median / max                    {statistics.median(usses):8.2f} / {max(usses):.2f} MiB")
    print(f"worker USS total                           {sum(usses):8.1f} MiB")
    print(f"baseline: bare fork-server child USS        {base:8.2f} MiB")
    print(f"ratio worker USS / bare child              {statistics.median(usses) / base:8.2f}x")
    print(f"target: idle worker USS <= 5 MiB           {'met' if statistics.median(usses) <= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
