"""CLI speed: how long a `tark` command takes as a user runs it, as ratios to baselines of the same run.

    .venv/bin/python ops/bench/cli_speed.py [--rounds 15]

Figures (medians of wall-clock time of a new process, rounds interleaved so the machine's load falls on all):
  - a warm `tark plugin call` through a running daemon (the plugin's worker already up) against a
    compile-per-call in-process host: a new Python process that imports wasmtime, compiles the same module,
    instantiates it and calls the same export with tark's alloc convention (target <= 0.6x);
  - `tark --help` against `python -c pass` with the same interpreter and site-packages (target <= 3x);
  - for context, the CPU time of `python -c "import click"` (the floor of any click CLI), and the same
    `tark plugin call` with no daemon (the supervisor embedded: a worker started per call).
ops/bench/report.py (the one report command) calls `measure(quick)`; docs/performance.md has the numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

PYTHON = sys.executable
TARK = str(Path(sys.executable).parent / "tark")
ROOT = Path(__file__).resolve().parents[2]

WAT = r"""
(module
  (memory (export "memory") 4)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n))) (local.get $p))
  (func (export "dealloc") (param i32 i32))
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (local.get $p) (local.get $l)) (local.get $l)))
"""

# The baseline host: what running the plugin in-process costs per command when nothing is kept between runs.
COMPILE_PER_CALL_HOST = r"""
import sys
import wasmtime

engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, sys.argv[1])
store = wasmtime.Store(engine)
exports = wasmtime.Linker(engine).instantiate(store, module).exports(store)
memory, data = exports["memory"], sys.argv[2].encode()
pointer = exports["alloc"](store, len(data))
memory.write(store, data, pointer)
result = exports["alloc"](store, 65536)
length = exports["echo"](store, pointer, len(data), result)
sys.stdout.write(memory.read(store, result, result + length).decode())
"""


def _run(argv: list[str], env: dict[str, str], expect: str | None = None) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of `argv` as a new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or (expect is not None and done.stdout.strip() != expect):
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout[-300:]} {done.stderr[-1000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _medians(rounds: int, commands: dict[str, Callable[[], tuple[float, float]]]) -> dict[str, float]:
    """Median wall-clock ms of each command as `name`, and its median CPU ms as `name cpu`."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            samples[name].append(command())
    medians = {}
    for name, values in samples.items():
        medians[name] = statistics.median(wall for wall, _ in values) * 1000
        medians[f"{name} cpu"] = statistics.median(cpu for _, cpu in values) * 1000
    return medians


def figures(rounds: int) -> dict[str, float]:
    """Median milliseconds of each command by name (wall clock), and `<name> cpu` (its own CPU time)."""
    import wasmtime

    with tempfile.TemporaryDirectory(prefix="tark-bench-") as scratch_name, \
            tempfile.TemporaryDirectory(prefix="tark-rt-") as runtime:  # short: unix socket paths
        scratch = Path(scratch_name)
        plugin = scratch / "src"
        plugin.mkdir()
        (plugin / "plugin.toml").write_text('[plugin]\nname = "bench"\nversion = "0.1.0"\ntype = "tool"\n')
        (plugin / "plugin.wasm").write_bytes(wasmtime.wat2wasm(WAT))
        (scratch / "host.py").write_text(COMPILE_PER_CALL_HOST)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("TARK_", "XDG_RUNTIME"))}
        env.update(TARK_DATA_DIR=str(scratch / "data"), TARK_CONFIG_DIR=str(scratch / "config"),
                   TARK_CACHE_DIR=str(scratch / "cache"), TARK_RUNTIME_DIR=runtime)
        _run([TARK, "plugin", "add", "--yes", str(plugin)], env)
        call = [TARK, "plugin", "call", "bench", "echo", "hi"]
        baselines = {
            "host": lambda: _run([PYTHON, str(scratch / "host.py"), str(plugin / "plugin.wasm"), "hi"], env, "hi"),
            "help": lambda: _run([TARK, "--help"], env),
            "pass": lambda: _run([PYTHON, "-c", "pass"], env),
            "click": lambda: _run([PYTHON, "-c", "import click"], env),
        }
        embedded = _medians(max(1, rounds // 3), {"embedded": lambda: _run(call, env, "hi")})
        _run([TARK, "supervisor", "start"], env)
        try:
            _run(call, env, "hi")  # the worker starts: every measured call is warm
            through_daemon = _medians(rounds, {"daemon": lambda: _run(call, env, "hi"), **baselines})
        finally:
            subprocess.run([TARK, "supervisor", "stop"], env=env, capture_output=True, check=False)
    return {**through_daemon, **embedded}


def measure(quick: bool) -> list:
    """The report's figures (ops/bench/report.py)."""
    from ops.bench.common import Result

    ms = figures(3 if quick else 15)
    host = "compile-per-call host: new process, import wasmtime, compile, call"
    cpu_note = "CPU time (user + system) of the command's own process: steadier than wall clock on a busy machine"
    return [
        Result("warm `tark plugin call` through the daemon", ms["daemon"], "ms", host, ms["host"], target_ratio=0.6,
               note="wall clock of a new process, medians over interleaved rounds"),
        Result("warm `tark plugin call` through the daemon, CPU", ms["daemon cpu"], "ms", host + ", CPU",
               ms["host cpu"], note=cpu_note + " (the daemon's share, ~1-3 ms, is not in it)"),
        Result("`tark --help`", ms["help"], "ms", "`python -c pass` (same interpreter and site)", ms["pass"],
               target_ratio=3.0),
        Result("`tark --help`, CPU", ms["help cpu"], "ms", "`python -c pass`, CPU", ms["pass cpu"], note=cpu_note),
        Result("floor: `python -c 'import click'`, CPU", ms["click cpu"], "ms", host + ", CPU", ms["host cpu"],
               note="context: what any click CLI costs before it does anything; the call target is below it"),
        Result("`tark plugin call`, no daemon (embedded supervisor)", ms["embedded"], "ms", host, ms["host"],
               note="context: starts the runtime and a worker in the command's own process"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    ms = figures(parser.parse_args().rounds)
    rows = [("warm tark plugin call (daemon)", "daemon", "host", 0.6),
            ("  the same, CPU time", "daemon cpu", "host cpu", None),
            ("tark --help", "help", "pass", 3.0),
            ("  the same, CPU time", "help cpu", "pass cpu", None),
            ("floor: python -c 'import click', CPU", "click cpu", "host cpu", None),
            ("tark plugin call, embedded", "embedded", "host", None)]
    print(f"{'figure':34} {'ms':>8} {'baseline ms':>12} {'ratio':>7}  target")
    for label, value, baseline, target in rows:
        ratio = ms[value] / ms[baseline]
        verdict = "-" if target is None else ("pass" if ratio <= target else "miss")
        print(f"{label:34} {ms[value]:8.1f} {ms[baseline]:12.1f} {ratio:6.2f}x  "
              f"{'-' if target is None else f'<= {target}x'} {verdict}")
    print(f"(baselines: host = new process importing wasmtime, compiling, calling: {ms['host']:.1f} ms; "
          f"python -c pass: {ms['pass']:.1f} ms)")


if __name__ == "__main__":
    main()
