"""Daemon mode: `tark supervisor start|stop|status`; while it runs, commands go through its control socket with
the same output as the embedded supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from supervisor.control import DaemonClient, Request
from wasm_fixtures import make_guest

BODY = r"""
  (data (i32.const 100) "{\"id\":\"d\",\"display_name\":\"D\"}")
  (func (export "provider_info") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 100) (i32.const 29)) (i32.const 29))
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (local.get $p) (local.get $l)) (local.get $l))
  (func (export "boom") (param $ret i32) (result i32) unreachable)
  (func (export "spin") (param $ret i32) (result i32) (loop $l (br $l)) (i32.const 0))
"""


@pytest.fixture
def daemon(tmp_path: Path, cli, run_tark):
    make_guest(tmp_path / "src", BODY, name="dplug")
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    started = run_tark("supervisor", "start")
    assert started.returncode == 0, started.stderr
    assert "Supervisor daemon started" in started.stdout
    yield Path(os.environ["TARK_RUNTIME_DIR"])
    run_tark("supervisor", "stop")


def status(run_tark) -> dict:
    done = run_tark("supervisor", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_when_no_daemon_runs(run_tark):
    state = status(run_tark)
    assert (state["running"], state["pid"], state["workers"]) == (False, None, [])
    assert state["socket"] == os.path.join(os.environ["TARK_RUNTIME_DIR"], "supervisor.sock")
    done = run_tark("supervisor", "stop")
    assert done.returncode == 0 and "No supervisor daemon is running." in done.stdout


def test_commands_use_the_daemon_with_the_same_output(daemon, run_tark):
    through_daemon = run_tark("plugin", "call", "dplug", "echo", "hi", "--json")
    assert through_daemon.returncode == 0, through_daemon.stderr
    state = status(run_tark)
    assert state["running"] is True
    (worker,) = state["workers"]
    assert worker["name"] == "dplug" and worker["state"] == "running" and worker["calls"] == 1
    assert 0 < worker["uss_mib"] <= worker["rss_mib"] and worker["cpu_s"] >= 0
    assert json.loads(run_tark("plugin", "status", "--json").stdout)["workers"][0]["pid"] == worker["pid"]
    assert worker["pid"] not in (state["pid"], os.getpid())
    assert worker["pid"] in {p.pid for p in psutil.Process(state["pid"]).children(recursive=True)}
    assert run_tark("supervisor", "stop").returncode == 0
    assert status(run_tark)["running"] is False
    embedded = run_tark("plugin", "call", "dplug", "echo", "hi", "--json")
    assert embedded.stdout == through_daemon.stdout == '{"ret":2,"output":"hi"}\n'


def test_errors_through_the_daemon_match_embedded(daemon, run_tark):
    for args, message in [
        (("ghost", "provider_info"), "Error: Plugin 'ghost' not found"),
        (("dplug", "nope"), "Error: Plugin does not export 'nope' function"),
        (("dplug", "boom"), "Error: plugin 'dplug' export 'boom' failed (trap)"),
    ]:
        done = run_tark("plugin", "call", *args)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    assert run_tark("plugin", "call", "dplug", "provider_info").returncode == 0  # still serving


def test_worker_death_mid_call_through_the_daemon(daemon, run_tark, tark_argv):
    assert run_tark("plugin", "call", "dplug", "echo", "warm").returncode == 0
    worker_pid = status(run_tark)["workers"][0]["pid"]
    spinning = subprocess.Popen([*tark_argv, "plugin", "call", "dplug", "spin", "--timeout", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while status(run_tark)["workers"][0]["calls"] < 2:  # the spin call has reached the worker's slot
        assert time.monotonic() < deadline, "the spinning call never started"
        time.sleep(0.1)
    time.sleep(0.3)
    os.kill(worker_pid, signal.SIGKILL)
    _out, err = spinning.communicate(timeout=30)
    assert spinning.returncode == 1 and "died" in err
    after = run_tark("plugin", "call", "dplug", "echo", "back", "--json")
    assert json.loads(after.stdout)["output"] == "back"
    (worker,) = status(run_tark)["workers"]
    assert worker["pid"] != worker_pid and worker["restarts"] == 1


def test_second_start_is_refused(daemon, run_tark):
    again = run_tark("supervisor", "start")
    assert again.returncode == 1 and "already running" in again.stderr


def test_control_socket_is_private_and_rejects_garbage(daemon):
    path = daemon / "supervisor.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.stat().st_mode) == 0o700
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(path))
        raw.sendall(b"\x00\x00\x00\x03abc")
        header = raw.recv(4)
        assert len(header) == 4  # an error reply, not a dead daemon
    with DaemonClient(daemon) as client:
        assert client.request(Request(op="dance")).error == "unknown control operation 'dance'"
        assert client.ping() > 0


def test_parallel_clients_are_served(daemon, run_tark):
    results = []

    def call(i: int) -> None:
        done = run_tark("plugin", "call", "dplug", "echo", f"n{i}", "--json")
        results.append(json.loads(done.stdout)["output"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["n0", "n1", "n2", "n3"]


def test_a_plugin_parked_after_repeated_crashes_starts_again_after_enable(daemon, run_tark):
    deadline = time.monotonic() + 60
    while True:
        done = run_tark("plugin", "call", "dplug", "echo", "x")
        if "is parked after" in done.stderr:
            break
        assert done.returncode == 0, done.stderr
        assert time.monotonic() < deadline, "the plugin was never parked"
        os.kill(status(run_tark)["workers"][0]["pid"], signal.SIGKILL)
    assert done.returncode == 1
    assert "run `tark plugin enable dplug`" in done.stderr
    assert status(run_tark)["workers"][0]["state"] == "crashed"
    enabled = run_tark("plugin", "enable", "dplug")
    assert enabled.returncode == 0, enabled.stderr
    again = run_tark("plugin", "call", "dplug", "echo", "back", "--json")
    assert json.loads(again.stdout) == {"ret": 4, "output": "back"}, again.stderr


def test_an_update_that_only_replaces_the_wasm_gets_a_new_worker(tmp_path, cli, run_tark):
    source = tmp_path / "versioned"
    make_guest(source, BODY + '(func (export "version") (result i32) (i32.const 1))', name="versioned")
    assert cli("plugin", "add", "--yes", str(source)).exit_code == 0
    assert run_tark("supervisor", "start").returncode == 0
    try:
        first = run_tark("plugin", "call", "versioned", "version", "--json")
        assert json.loads(first.stdout)["ret"] == 1
        make_guest(source, BODY + '(func (export "version") (result i32) (i32.const 2))', name="versioned")
        assert run_tark("plugin", "update", "versioned").returncode == 0
        second = run_tark("plugin", "call", "versioned", "version", "--json")
        assert json.loads(second.stdout)["ret"] == 2, second.stderr
    finally:
        run_tark("supervisor", "stop")


def test_disable_and_remove_stop_the_plugins_worker_in_the_daemon(daemon, run_tark):
    assert run_tark("plugin", "call", "dplug", "echo", "x").returncode == 0
    pid = status(run_tark)["workers"][0]["pid"]
    assert run_tark("plugin", "disable", "dplug").returncode == 0
    (worker,) = status(run_tark)["workers"]
    assert worker["state"] == "stopped" and worker["pid"] is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    refused = run_tark("plugin", "call", "dplug", "echo", "x")
    assert refused.returncode == 1 and "disabled" in refused.stderr
    assert run_tark("plugin", "enable", "dplug").returncode == 0
    assert run_tark("plugin", "call", "dplug", "echo", "x").returncode == 0
    assert run_tark("plugin", "remove", "dplug").returncode == 0
    assert status(run_tark)["workers"][0]["state"] == "stopped"
