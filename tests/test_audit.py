"""The audit trail: every decision and event as a JSON line, bounded in size (rotation) and in rate (counted
summaries), readable with `tark plugin audit`."""

from __future__ import annotations

import datetime
import json
import logging
import stat
import threading
import time
from pathlib import Path

import pytest

from cap_support import make_host
from supervisor.capabilities.audit import (AuditLog, AuditSettings, audit_files, default_audit_path, read_audit,
                                           read_audit_trail)
from supervisor.cli.plugin_audit import parse_since
from wasm_fixtures import make_guest
from worker import protocol


def test_allowed_and_denied_decisions_and_events_are_json_lines_in_order(tmp_path: Path) -> None:
    with make_host(tmp_path, 'env = ["API_KEY"]', environ={"API_KEY": "k-123"}, name="demo") as host:
        assert host.handle(protocol.EnvGet(host_call_id=1, name="API_KEY")).code == 5
        assert host.handle(protocol.EnvGet(host_call_id=2, name="HOME")).code == -2
        host.audit.event("approval", items=["env:API_KEY"], by="test")
    log = tmp_path / "audit.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    records = read_audit(log)
    assert [(r["kind"], r.get("decision"), r.get("target")) for r in records] == [
        ("decision", "allowed", "API_KEY"), ("decision", "denied", "HOME"), ("approval", None, None)]
    assert records[2]["items"] == ["env:API_KEY"] and records[2]["plugin"] == "demo"
    assert "k-123" not in log.read_text()  # the value is never audited, only the name


def test_allowed_records_are_buffered_but_reach_the_file_within_the_flush_interval(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log", "demo", AuditSettings(flush_seconds=0.2))
    audit.allowed("storage", "get k", "storage = true")
    deadline = time.monotonic() + 5
    while not read_audit(tmp_path / "audit.log") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r["target"] for r in read_audit(tmp_path / "audit.log", decision="allowed")] == ["get k"]
    audit.close()


def test_rotation_keeps_at_most_keep_files_each_bounded(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    settings = AuditSettings(max_bytes=4096, keep=3, denied_burst=100_000)
    audit = AuditLog(log, "demo", settings)
    for i in range(400):
        audit.denied("fs_read", f"/secret/{i:04d}", "not declared")
    audit.close()
    files = audit_files(log)
    assert [f.name for f in files] == ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"]
    assert all(f.stat().st_size <= 4096 for f in files)
    assert not (tmp_path / "audit.log.4").exists()
    targets = [r["target"] for r in read_audit_trail(log)]
    assert targets == sorted(targets) and targets[-1] == "/secret/0399"  # the newest survive, oldest first


def test_writers_sharing_the_file_lose_no_line_across_rotations(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    settings = AuditSettings(max_bytes=16384, keep=50, denied_burst=100_000)
    writers = [AuditLog(log, f"p{n}", settings) for n in range(3)]

    def write(audit: AuditLog) -> None:
        for i in range(300):
            audit.denied("env", f"VAR_{i}", "not declared")

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = list(read_audit_trail(log))
    assert len(audit_files(log)) > 3
    assert sorted((r["plugin"], r["target"]) for r in records) == sorted(
        (f"p{n}", f"VAR_{i}") for n in range(3) for i in range(300))


def test_a_denied_flood_is_counted_in_a_summary_not_written_line_by_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "audit.log"
    audit = AuditLog(log, "flood", AuditSettings(denied_per_second=1, denied_burst=5))
    with caplog.at_level(logging.WARNING, logger="tark.audit"):
        for i in range(5000):
            audit.denied("fs_read", "/etc/shadow", "not declared")
        audit.close()
    denied = read_audit(log, decision="denied")
    (summary,) = [r for r in read_audit(log) if r["kind"] == "suppressed"]
    assert 5 <= len(denied) <= 7
    assert summary["counts"] == [{"decision": "denied", "capability": "fs_read", "count": 5000 - len(denied)}]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tark.audit"]
    assert len(warnings) == len(denied) + 1
    assert f"suppressed {5000 - len(denied)} denied fs_read records" in warnings[-1]


def test_allowed_flood_is_sampled_with_counts_and_does_not_starve_denials(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    audit = AuditLog(log, "busy", AuditSettings(allowed_per_second=1, allowed_burst=10, denied_burst=3))
    for _ in range(1000):
        audit.allowed("storage", "get k", "storage = true")
    audit.denied("env", "AWS_SECRET_ACCESS_KEY", "not declared")
    audit.close()
    records = read_audit(log)
    allowed = [r for r in records if r.get("decision") == "allowed"]
    (summary,) = [r for r in records if r["kind"] == "suppressed"]
    assert [r["target"] for r in records if r.get("decision") == "denied"] == ["AWS_SECRET_ACCESS_KEY"]
    assert len(allowed) + summary["counts"][0]["count"] == 1000
    assert summary["counts"][0]["decision"] == "allowed"


FS_FLOOD = """
  (data (i32.const 64) "/etc/shadow")
  (func (export "flood") (result i32)
    (local $i i32)
    (loop $l
      (drop (call $fs_read (i32.const 64) (i32.const 11) (i32.const 4096)))
      (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 500))))
    (global.get $counter))
"""


def test_hostile_plugin_looping_denied_fs_read_keeps_audit_and_stderr_bounded(
        tmp_path: Path, make_pool, isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = make_guest(tmp_path / "hostile", FS_FLOOD, name="hostile")
    pool = make_pool()
    calls = 0
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tark.audit"):
        while time.monotonic() - started < 3.0:
            outcome = pool.call(plugin, "flood", [], None, instance="keep")
            assert outcome.ok, outcome.error_message
            calls = outcome.ret
        pool.close()  # closes the host, which writes the pending summary
    elapsed = time.monotonic() - started
    log = default_audit_path()
    settings = AuditSettings()
    denied = read_audit(log, decision="denied")
    summaries = [r for r in read_audit(log) if r["kind"] == "suppressed"]
    suppressed = sum(c["count"] for r in summaries for c in r["counts"])
    assert calls > 2 * settings.denied_burst  # the flood really outran the limit
    assert len(denied) + suppressed == calls  # every denial accounted for
    assert len(denied) <= settings.denied_burst + settings.denied_per_second * elapsed + 1
    assert log.stat().st_size < 200 * 1024
    assert len(caplog.records) <= len(denied) + 2 * len(summaries)
    assert any(f"suppressed {c['count']} denied fs_read" in caplog.text for r in summaries for c in r["counts"])


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_shows_records_of_current_and_rotated_files_escaped(cli, isolated_env: Path) -> None:
    audit = AuditLog(default_audit_path(), "nosy", AuditSettings(max_bytes=600, keep=5))
    audit.denied("fs_read", "/tmp/\x1b[2Jpwned\rOK", "not declared")
    for i in range(6):
        audit.denied("env", f"VAR_{i}", "not declared")
    AuditLog(default_audit_path(), "other").denied("env", "X", "not declared")
    audit.close()
    assert len(audit_files(default_audit_path())) > 2
    result = cli("plugin", "audit", "nosy")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output
    assert "/tmp/\\x1b[2Jpwned\\rOK" in result.output
    assert [line.split()[4] for line in result.output.splitlines()][1:] == [f"VAR_{i}" for i in range(6)]
    as_json = json.loads(cli("plugin", "audit", "--json").output)
    assert [r["plugin"] for r in as_json] == ["nosy"] * 7 + ["other"]
    assert as_json[0]["target"] == "/tmp/\x1b[2Jpwned\rOK"


def test_cli_since_filters_by_time_and_rejects_nonsense(cli, isolated_env: Path) -> None:
    old = {"time": "2020-01-01T00:00:00.000+00:00", "plugin": "p", "kind": "decision", "decision": "denied",
           "capability": "env", "target": "OLD", "reason": "r"}
    default_audit_path().parent.mkdir(parents=True, exist_ok=True)
    default_audit_path().write_text(json.dumps(old) + "\n")
    AuditLog(default_audit_path(), "p").denied("env", "NEW", "r")
    assert [r["target"] for r in json.loads(cli("plugin", "audit", "--since", "10m", "--json").output)] == ["NEW"]
    assert [r["target"] for r in json.loads(cli("plugin", "audit", "--since", "2019-12-31", "--json").output)] == [
        "OLD", "NEW"]
    bad = cli("plugin", "audit", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "neither a duration" in bad.output
    assert "No audit records for nobody" in cli("plugin", "audit", "nobody").output


def test_parse_since_units() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert parse_since("90s", now) == now - datetime.timedelta(seconds=90)
    assert parse_since("2h", now) == now - datetime.timedelta(hours=2)
    assert parse_since("1w", now) == now - datetime.timedelta(days=7)
    assert parse_since("2026-01-01T00:00:00+00:00", now) == datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def test_a_worker_breaking_the_protocol_is_an_audit_event(make_pool, tmp_path: Path) -> None:
    import wasm_fixtures

    plugin = make_guest(tmp_path / "probe", '(func (export "count") (param i32) (result i32) (i32.const 0))')
    pool = make_pool(worker_entry=wasm_fixtures.garbage_worker)
    assert pool.call(plugin, "count", [], 16).error_kind == "invalid_message"
    (event,) = [r for r in read_audit(default_audit_path()) if r["kind"] == "invalid_worker_message"]
    assert event["plugin"] == "probe" and "sent an invalid message" in event["detail"]


def test_a_plugin_looping_a_refused_storage_set_cannot_flood_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from policy.limits import Limits

    with caplog.at_level(logging.DEBUG, logger="tark.plugin.looper"), \
            make_host(tmp_path, "storage = true", name="looper", limits=Limits(storage_max_value_bytes=8)) as host:
        for _ in range(5000):
            assert host.handle(protocol.StorageSet(host_call_id=1, key="k", value="x" * 9)).code == -1
    lines = [r.getMessage() for r in caplog.records if r.name == "tark.plugin.looper"]
    refused = [line for line in lines if "refused" in line]
    summaries = [line for line in lines if "suppressed (rate limit)" in line]
    assert 50 <= len(refused) <= 60 and len(summaries) >= 1
    assert len(refused) + sum(int(line.split()[0]) for line in summaries) == 5000


def test_through_the_cli_a_denied_flood_leaves_stderr_and_the_trail_small(tmp_path: Path, cli, run_tark) -> None:
    """The reported incident: 25 s of a looping denied fs.read wrote 63 MiB of audit log and 61 MiB of stderr."""
    flood = FS_FLOOD.replace("(i32.const 500)", "(i32.const 15000)")
    make_guest(tmp_path / "src", flood, name="hostile")
    assert cli("plugin", "add", str(tmp_path / "src")).exit_code == 0
    started = time.monotonic()
    done = run_tark("plugin", "call", "hostile", "flood", "--json", "--timeout", "120", timeout=150)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["ret"] == 15000
    assert len(done.stderr) < 200 * (200 + 20 * elapsed + 50)  # unlimited: 15000 warning lines, about 1.5 MB
    assert "suppressed" in done.stderr and "denied fs_read records" in done.stderr
    trail = list(read_audit_trail(default_audit_path()))
    denied = sum(1 for r in trail if r.get("decision") == "denied")
    counted = sum(c["count"] for r in trail if r["kind"] == "suppressed" for c in r["counts"])
    settings = AuditSettings()
    assert denied + counted == 15000
    assert denied <= settings.denied_burst + settings.denied_per_second * elapsed + 1
    assert default_audit_path().stat().st_size < 300 * denied + 10_000
