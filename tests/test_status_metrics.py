"""What `tark plugin status` and the daemon's Prometheus metrics report: calls by outcome, host calls by capability
and decision, a timeout shown as a timeout (not a crash), why a plugin is parked."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from wasm_fixtures import make_guest

BODY = r"""
  (data (i32.const 100) "ALLOWED")
  (data (i32.const 120) "SECRET")
  (func (export "envs") (param $ret i32) (result i32)
    (drop (call $env_get (i32.const 100) (i32.const 7) (local.get $ret)))
    (drop (call $env_get (i32.const 120) (i32.const 6) (local.get $ret)))
    (call $log_info (i32.const 100) (i32.const 7))
    (i32.const 0))
  (func (export "spin") (param $ret i32) (result i32) (loop $l (br $l)) (i32.const 0))
"""


@pytest.fixture
def plugin(tmp_path: Path):
    return make_guest(tmp_path / "counted", BODY, name="counted", capabilities='env = ["ALLOWED"]')


def test_status_counts_host_calls_by_capability_and_decision(make_pool, plugin) -> None:
    pool = make_pool()
    assert pool.call(plugin, "envs", [], 64).ok
    (status,) = pool.status()
    assert status.state == "running" and status.uptime_s is not None and status.uptime_s >= 0
    assert status.stats["host_calls"]["env"] == {"allowed": 1, "denied": 1}
    assert status.stats["host_calls"]["log"] == {"allowed": 1, "denied": 0}
    assert status.stats["denials"] == 1
    assert status.stats["outcomes"] == {"ok": 1}


def test_a_timeout_shows_as_a_timeout_not_as_a_crash(make_pool, plugin) -> None:
    pool = make_pool()
    assert pool.call(plugin, "envs", [], 64).ok  # the worker runs: the deadline below is the guest's alone
    outcome = pool.call(plugin, "spin", [], 64, timeout_s=0.5)
    assert outcome.error_kind == "timeout" and outcome.worker_pid is not None
    (status,) = pool.status()
    assert status.state == "stopped" and status.restarts == 0
    assert status.last_error_kind == "timeout" and "deadline" in status.last_error
    assert status.stats["outcomes"] == {"ok": 1, "timeout": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_daemon_serves_prometheus_metrics_and_plugin_status(plugin, cli, run_tark) -> None:
    assert cli("plugin", "add", "--yes", str(plugin.directory)).exit_code == 0
    port = free_port()
    started = run_tark("supervisor", "start", "--metrics-port", str(port))
    assert started.returncode == 0, started.stderr
    try:
        assert run_tark("plugin", "call", "counted", "envs").returncode == 0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'tark_plugin_calls_total{outcome="ok",plugin="counted"} 1.0' in text
        assert 'tark_plugin_host_calls_total{capability="env",decision="denied",plugin="counted"} 1.0' in text
        assert 'tark_plugin_call_seconds_count{plugin="counted"} 1.0' in text
        assert 'tark_plugin_uss_bytes{plugin="counted"}' in text
        shown = run_tark("plugin", "status", "counted", "--json")
        assert shown.returncode == 0, shown.stderr
        (worker,) = json.loads(shown.stdout)["workers"]
        assert worker["state"] == "running" and worker["uss_mib"] > 0 and worker["stats"]["denials"] == 1
        text_view = run_tark("plugin", "status", "counted").stdout
        assert "Host calls: env 2 (1 denied), log 1" in text_view and "Denials:    1" in text_view
    finally:
        run_tark("supervisor", "stop")


def test_plugin_status_without_a_daemon_says_so(run_tark) -> None:
    done = run_tark("plugin", "status")
    assert done.returncode == 0 and "No supervisor daemon is running" in done.stdout
    assert json.loads(run_tark("plugin", "status", "--json").stdout) == {"running": False, "pid": None, "workers": []}
