"""`tark plugin call` and the Supervisor façade: each plugin runs in its own worker, host calls answered by the
supervisor, failures reported clearly while the supervisor stays up."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from supervisor.supervisor import CallRefused, Supervisor
from supervisor.workers import WorkerLimits
from wasm_fixtures import make_guest

PROVIDER_BODY = r"""
  (data (i32.const 100) "{\"id\":\"probe\",\"display_name\":\"Probe\"}")
  (data (i32.const 200) "greeting")
  (data (i32.const 300) "\ff\fe")
  (func (export "provider_info") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 100) (i32.const 37)) (i32.const 37))
  ;; echo(arg) -> arg, and remembers it in storage under "greeting"
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (drop (call $storage_set (i32.const 200) (i32.const 8) (local.get $p) (local.get $l)))
    (memory.copy (local.get $ret) (local.get $p) (local.get $l)) (local.get $l))
  ;; recall() -> the stored greeting, read back through tark:storage
  (func (export "recall") (param $ret i32) (result i32)
    (call $storage_get (i32.const 200) (i32.const 8) (local.get $ret)))
  (func (export "channel_start") (result i32) (i32.const 0))
  (func (export "boom") (param $ret i32) (result i32) unreachable)
  (func (export "spin") (param $ret i32) (result i32) (loop $l (br $l)) (i32.const 0))
  (func (export "too_long") (param $ret i32) (result i32) (i32.const 70000))
  (func (export "bad_utf8") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 300) (i32.const 2)) (i32.const 2))
  (func (export "fails") (param $ret i32) (result i32) (i32.const -7))
"""


@pytest.fixture
def probe(tmp_path: Path, cli):
    make_guest(tmp_path / "src", PROVIDER_BODY, name="probe", capabilities="storage = true")
    result = cli("plugin", "add", "--yes", str(tmp_path / "src"))
    assert result.exit_code == 0, result.output
    return "probe"


def test_call_prints_the_export_output(probe, run_tark):
    done = run_tark("plugin", "call", probe, "provider_info")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "probe", "display_name": "Probe"}


def test_json_output_is_exactly_one_line(probe, run_tark):
    done = run_tark("plugin", "call", probe, "echo", "héllo", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert json.loads(done.stdout) == {"ret": 6, "output": "héllo"}
    status = run_tark("plugin", "call", probe, "channel_start", "--json")
    assert json.loads(status.stdout) == {"ret": 0, "output": None}  # bare status export


def test_each_plugin_runs_in_its_own_worker_and_host_calls_reach_the_supervisor(probe, tmp_path, cli):
    make_guest(tmp_path / "other", PROVIDER_BODY, name="other", capabilities="storage = true")
    assert cli("plugin", "add", "--yes", str(tmp_path / "other")).exit_code == 0
    with Supervisor() as supervisor:
        first = supervisor.call("probe", "echo", ["one"])
        second = supervisor.call("other", "echo", ["two"])
        assert first.worker_pid not in (None, os.getpid())
        assert second.worker_pid not in (None, os.getpid(), first.worker_pid)
        children = {p.pid for p in psutil.Process().children(recursive=True)}
        assert {first.worker_pid, second.worker_pid} <= children
        # fresh instance per call, state kept by the supervisor's storage: each plugin sees only its own
        assert supervisor.call("probe", "recall", []).output == "one"
        assert supervisor.call("other", "recall", []).output == "two"


def test_trap_is_a_clear_error_and_the_next_call_works(probe, run_tark):
    with Supervisor() as supervisor:
        failed = supervisor.call(probe, "boom", [])
        assert failed.error_kind == "trap" and "unreachable" in failed.error
        assert supervisor.call(probe, "echo", ["again"]).output == "again"
    done = run_tark("plugin", "call", probe, "boom")
    assert done.returncode == 1
    assert "Error: plugin 'probe' export 'boom' failed (trap)" in done.stderr
    assert "Traceback" not in done.stderr


def test_result_larger_than_buffer_and_invalid_utf8_are_errors(probe, run_tark):
    too_long = run_tark("plugin", "call", probe, "too_long")
    assert too_long.returncode == 1 and "70000" in too_long.stderr and "65536" in too_long.stderr
    bad = run_tark("plugin", "call", probe, "bad_utf8")
    assert bad.returncode == 1 and "Invalid UTF-8 in result" in bad.stderr


def test_negative_return_exits_nonzero_naming_the_code(probe, run_tark):
    done = run_tark("plugin", "call", probe, "fails", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"ret": -7, "output": None}
    assert "returned error code: -7" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("probe", "nope"), "Plugin does not export 'nope' function"),
        (("probe", "echo"), "takes 1 string argument(s), 0 given"),
        (("probe", "echo", "a", "b"), "takes 1 string argument(s), 2 given"),
        (("ghost", "provider_info"), "Plugin 'ghost' not found"),
    ],
)
def test_refused_calls_name_the_cause(probe, run_tark, args, message):
    done = run_tark("plugin", "call", *args)
    assert done.returncode == 1
    assert message in done.stderr


def test_disabled_plugin_is_not_called(probe, cli):
    assert cli("plugin", "disable", probe).exit_code == 0
    with Supervisor() as supervisor, pytest.raises(CallRefused, match="disabled"):
        supervisor.call(probe, "provider_info", [])


def test_cpu_budget_stops_an_infinite_loop(probe):
    with Supervisor(worker_limits=WorkerLimits(call_cpu_ms=200)) as supervisor:
        started = time.monotonic()
        result = supervisor.call(probe, "spin", [])
        assert result.error_kind == "cpu_limit", result
        assert time.monotonic() - started < 5
        assert supervisor.call(probe, "echo", ["alive"]).output == "alive"


def test_worker_killed_mid_call_fails_fast_then_recovers(probe):
    with Supervisor() as supervisor:
        first_pid = supervisor.call(probe, "echo", ["warm"]).worker_pid
        outcome = {}

        def spin() -> None:
            outcome["result"] = supervisor.call(probe, "spin", [])

        caller = threading.Thread(target=spin)
        caller.start()
        time.sleep(0.3)  # the guest is now looping inside the worker
        killed_at = time.monotonic()
        os.kill(first_pid, signal.SIGKILL)
        caller.join(timeout=10)
        assert not caller.is_alive(), "the call must not hang after its worker died"
        assert time.monotonic() - killed_at < 2
        result = outcome["result"]
        assert "died" in result.error and "probe" in result.error
        after = supervisor.call(probe, "echo", ["back"])
        assert after.output == "back" and after.worker_pid != first_pid
        assert supervisor.status()[0]["restarts"] == 1
