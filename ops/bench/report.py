"""The benchmark report: runs every topic in ops/bench/, prints one table, writes ops/bench/RESULTS.md.

    .venv/bin/python -m ops.bench [--quick] [--topics roundtrip,coldstart] [--out PATH]

A topic is any module here with `measure(quick) -> list[Result]` (ops/bench/common.py); TOPIC_ORDER only orders
them. A topic that fails is reported as such and the command exits 1; missed targets are results, not failures.
Full runs write RESULTS.md (with the machine's description and the date); --quick writes only to --out.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import attrs

from ops.bench.common import Result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "RESULTS.md"
TOPIC_ORDER = ("cli_speed", "roundtrip", "coldstart", "idle_memory", "scale", "throughput", "storage", "recovery")


@attrs.frozen
class TopicRun:
    topic: str
    results: list[Result]
    seconds: float
    error: str | None = None


def available_topics() -> list[str]:
    found = sorted(path.stem for path in HERE.glob("*.py") if not path.stem.startswith("_")
                   and re.search(r"^def measure\(", path.read_text(encoding="utf-8"), re.MULTILINE))
    return sorted(found, key=lambda name: (TOPIC_ORDER.index(name) if name in TOPIC_ORDER else len(TOPIC_ORDER),
                                           name))


def run_topic(topic: str, quick: bool) -> TopicRun:
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"ops.bench.{topic}")
        results = list(module.measure(quick))
        if not results:
            raise RuntimeError("measured nothing")
    except (Exception, SystemExit):  # noqa: BLE001 - one broken topic must not hide the others' figures
        return TopicRun(topic, [], time.perf_counter() - started, traceback.format_exc(limit=8))
    return TopicRun(topic, results, time.perf_counter() - started)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 2**20:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    try:
        import wasmtime
        wasmtime_version = getattr(wasmtime, "__version__", None) or _dist_version("wasmtime")
    except ImportError:
        wasmtime_version = "missing"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu} ({os.cpu_count()} logical CPUs, {len(os.sched_getaffinity(0))} usable)",
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wasmtime": str(wasmtime_version),
        "commit": commit,
        "load average at start (1, 5, 15 min)": load,
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def fmt(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rows(runs: list[TopicRun]) -> list[list[str]]:
    table = []
    for run in runs:
        if run.error:
            table.append([run.topic, "(topic failed: see below)", "", "", "", "", "ERROR"])
        for r in run.results:
            table.append([run.topic, r.name, f"{fmt(r.value)} {r.unit}", f"{r.baseline_name}: {fmt(r.baseline)} {r.unit}",
                          f"{r.ratio:.2f}x", r.target, r.verdict])
    return table


HEADER = ["topic", "figure", "value", "baseline (same run)", "ratio", "target", "result"]


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *table]) for i in range(len(HEADER))]
    line = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, table)])


def markdown(runs: list[TopicRun], described: dict[str, str], quick: bool, seconds: float) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["# Benchmark results", "",
           "Written by `.venv/bin/python -m ops.bench` (docs/performance.md explains each figure). Every ratio is "
           "taken against a baseline measured in the same run; the machine is shared, so absolute values move "
           "between runs while ratios hold better.", ""]
    if quick:
        out += ["**Quick run (small sizes): these figures check the harness, not the runtime.**", ""]
    out += ["## Machine", ""] + [f"- {key}: {value}" for key, value in described.items()]
    out += [f"- run took: {seconds:.0f} s", "", "## Results", "",
            "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows(runs)]
    missed = [(run.topic, r) for run in runs for r in run.results if r.verdict == "miss"]
    if missed:
        out += ["", "## Missed targets", ""] + [f"- **{topic} / {r.name}**: {r.shortfall}." + (f" {r.note}" if r.note
                                                                                             else "")
                                                 for topic, r in missed]
    notes = [(run.topic, r) for run in runs for r in run.results if r.note and r.verdict != "miss"]
    if notes:
        out += ["", "## Notes", ""] + [f"- **{topic} / {r.name}** ({r.verdict}): {r.note}" for topic, r in notes]
    failed = [run for run in runs if run.error]
    if failed:
        out += ["", "## Topics that failed", ""]
        for run in failed:
            out += [f"### {run.topic}", "", "```", run.error.rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the harness (writes only --out)")
    parser.add_argument("--topics", help="comma-separated topics to run (default: all of " +
                        ", ".join(available_topics()) + ")")
    parser.add_argument("--out", type=Path, help=f"where to write the markdown report (default: {RESULTS.relative_to(ROOT)} "
                        "for a full run of every topic)")
    args = parser.parse_args(argv)
    topics = available_topics()
    if args.topics:
        chosen = [t.strip() for t in args.topics.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in topics]
        if unknown:
            parser.error(f"unknown topic(s) {', '.join(unknown)}; available: {', '.join(topics)}")
        topics = chosen
    out = args.out or (RESULTS if not args.quick and not args.topics else None)
    described = machine()
    print("\n".join(f"{key}: {value}" for key, value in described.items()), flush=True)
    started = time.perf_counter()
    runs = []
    for topic in topics:
        print(f"... {topic}", file=sys.stderr, flush=True)
        run = run_topic(topic, args.quick)
        print(f"    {len(run.results)} figures in {run.seconds:.1f} s" + (" FAILED" if run.error else ""),
              file=sys.stderr, flush=True)
        runs.append(run)
    seconds = time.perf_counter() - started
    print()
    print(text_table(rows(runs)))
    for run in runs:
        if run.error:
            print(f"\n{run.topic} failed:\n{run.error}", file=sys.stderr)
    if out is not None:
        out.write_text(markdown(runs, described, args.quick, seconds), encoding="utf-8")
        print(f"\nwritten: {out}")
    sys.exit(1 if any(run.error for run in runs) else 0)


if __name__ == "__main__":
    main()
