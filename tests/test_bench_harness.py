"""The benchmark command (`python -m ops.bench`, docs/performance.md) runs every topic end to end in quick mode,
so that no topic can rot unnoticed: real workers, real sockets, the report's table and its markdown file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ops.bench.common import Result
from ops.bench.report import available_topics

ROOT = Path(__file__).resolve().parents[1]


def test_a_result_passes_only_when_every_target_it_has_is_met():
    slow = Result("call", 30.0, "ms", "floor", 10.0, target_ratio=2.0)
    assert slow.ratio == 3.0 and slow.verdict == "miss" and slow.target == "<= 2x"
    assert slow.shortfall == "ratio 3.00x vs <= 2x: 50% over"
    assert Result("call", 15.0, "ms", "floor", 10.0, target_ratio=2.0).verdict == "pass"
    both = Result("start", 12.0, "ms", "bare child", 10.0, target_ratio=2.0, target_value=10.0)
    assert both.verdict == "miss" and both.target == "<= 2x, <= 10 ms"
    assert both.shortfall == "value 12 ms vs <= 10 ms: 20% over"  # what misses, and by how much
    faster = Result("calls", 300.0, "calls/s", "one plugin", 100.0, target_ratio=2.0, higher_is_better=True)
    assert faster.verdict == "pass" and faster.target == ">= 2x"
    assert Result("context", 1.0, "ms", "x", 2.0).verdict == "-"


def test_the_quick_report_runs_every_topic_and_writes_a_table_with_ratios_and_verdicts(tmp_path):
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "-m", "ops.bench", "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr
    topics = available_topics()
    assert {"cli_speed", "roundtrip", "coldstart", "idle_memory", "scale", "throughput", "storage", "recovery"} <= set(
        topics)
    table = [line for line in run.stdout.splitlines() if line.split(" ", 1)[0] in topics]
    assert {line.split(" ", 1)[0] for line in table} == set(topics)  # every topic measured something
    for line in table:
        assert re.search(r"\s\d+\.\d\dx\s", line), line  # a ratio to a same-run baseline
        assert line.rstrip().endswith(("pass", "miss", "-")), line
    report = out.read_text()
    assert "Quick run" in report and "## Machine" in report and re.search(r"date: \d{4}-\d\d-\d\d", report)
    assert report.count("\n| ") == len(table) + 1  # header + one row per figure


def test_an_unknown_topic_is_a_usage_error_naming_the_available_ones():
    run = subprocess.run([sys.executable, "-m", "ops.bench", "--topics", "nosuch"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert "unknown topic(s) nosuch" in run.stderr and "roundtrip" in run.stderr
