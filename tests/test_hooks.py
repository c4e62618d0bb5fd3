"""Hook plugins around `tark tool run` (docs/tool-hook-abi.md): every enabled hook plugin hears on_tool_execute
before the tool and on_tool_complete or on_error after it, each in its own worker; a failing hook is a warning
that never changes the tool's outcome. examples/audit-hook records what it heard, read back with
`tark plugin call audit-hook audit_events`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from supervisor import paths
from supervisor.registry import Registry
from supervisor.supervisor import Supervisor
from supervisor.tools import ToolRunner
from supervisor.workers import WorkerLimits
from test_tools import RISK, add, install_examples, tool_guest
from wasm_fixtures import make_guest

HOOK_EXPORTS = {
    "hook_on_tool_execute": "(param i32 i32 i32 i32)",
    "hook_on_tool_complete": "(param i32 i32 i32 i32)",
    "hook_on_error": "(param i32 i32)",
}


def hook_guest(tmp_path: Path, name: str, body_of_each: str, *, extra: str = "") -> None:
    """A hook plugin whose three hook exports all run `body_of_each` (which leaves an i32)."""
    exports = "\n".join(f'(func (export "{export}") {params} (result i32) {body_of_each})'
                        for export, params in HOOK_EXPORTS.items())
    make_guest(tmp_path / "src" / name, exports + extra, name=name, type="hook")


def events(cli, hook: str = "audit-hook") -> list[str]:
    called = cli("plugin", "call", hook, "audit_events", "--json")
    assert called.exit_code == 0, called.output
    return json.loads(called.stdout)["output"].splitlines()


@pytest.fixture
def tools_and_audit(cli, tmp_path: Path) -> None:
    install_examples(cli, tmp_path, "word-tools", "audit-hook")


def test_hooks_hear_the_tool_its_arguments_and_its_result(tools_and_audit, cli, run_tark):
    done = run_tark("tool", "run", "word-tools", "word_count", "--args", '{"text": "one two three"}')
    assert (done.returncode, done.stdout, done.stderr) == (0, "3\n", "")
    assert events(cli) == [
        'on_tool_execute word_count {"text":"one two three"}',
        'on_tool_complete word_count {"success":true,"output":"3","error":null}',
    ]


def test_json_output_lists_each_hook_call(tools_and_audit, cli):
    done = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"x"}', "--json")
    assert json.loads(done.stdout)["hooks"] == [
        {"plugin": "audit-hook", "event": "on_tool_execute", "ok": True, "error": None},
        {"plugin": "audit-hook", "event": "on_tool_complete", "ok": True, "error": None},
    ]


def test_on_error_hears_a_tool_that_reports_failure(tools_and_audit, cli):
    done = cli("tool", "run", "word-tools", "read_note")
    assert done.exit_code == 1
    assert events(cli) == [
        "on_tool_execute read_note {}",
        'on_error {"plugin":"word-tools","tool":"read_note","error":"no note has been stored yet"}',
    ]


def test_on_error_hears_a_tool_that_traps(tools_and_audit, cli, tmp_path):
    tool_guest(tmp_path, "crasher", RISK.format(0) +
               '(func (export "tool_execute") (param i32 i32 i32 i32 i32) (result i32) unreachable)')
    add(cli, tmp_path, "crasher")
    assert cli("tool", "run", "crasher", "t").exit_code == 1
    [before, error] = events(cli)
    assert before == "on_tool_execute t {}"
    payload = json.loads(error.removeprefix("on_error "))
    assert (payload["plugin"], payload["tool"]) == ("crasher", "t")
    assert payload["error"].startswith("trap: ") and "unreachable" in payload["error"]


def test_a_trapping_hook_is_a_warning_and_the_healthy_hook_still_fires(tools_and_audit, cli, tmp_path, run_tark):
    hook_guest(tmp_path, "bad-hook", "unreachable")
    add(cli, tmp_path, "bad-hook")
    done = run_tark("tool", "run", "word-tools", "word_count", "--args", '{"text":"a b"}')
    assert (done.returncode, done.stdout) == (0, "2\n")
    assert "Warning: hook 'bad-hook' failed in on_tool_execute: trap: " in done.stderr
    assert "Warning: hook 'bad-hook' failed in on_tool_complete: trap: " in done.stderr
    assert "Traceback" not in done.stderr
    assert events(cli) == ['on_tool_execute word_count {"text":"a b"}',
                           'on_tool_complete word_count {"success":true,"output":"2","error":null}']


def test_a_negative_hook_return_is_a_warning_and_never_changes_the_outcome(tools_and_audit, cli, tmp_path):
    hook_guest(tmp_path, "grumpy", "(i32.const -3)")
    add(cli, tmp_path, "grumpy")
    ok = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"a"}', "--json")
    assert ok.exit_code == 0
    assert "Warning: hook 'grumpy' failed in on_tool_execute: returned error code: -3" in ok.stderr
    document = json.loads(ok.stdout)
    assert (document["success"], document["output"]) == (True, "1")
    assert {"plugin": "grumpy", "event": "on_tool_complete", "ok": False,
            "error": "returned error code: -3"} in document["hooks"]
    failed = cli("tool", "run", "word-tools", "read_note")
    assert failed.exit_code == 1
    assert "Warning: hook 'grumpy' failed in on_error: returned error code: -3" in failed.stderr
    assert "Error: tool 'read_note' of plugin 'word-tools' failed: no note has been stored yet" in failed.stderr


def test_hooks_without_an_event_export_are_skipped_for_that_event(tools_and_audit, cli, tmp_path):
    make_guest(tmp_path / "src" / "errors-only", """
      (data (i32.const 100) "last_error")
      (func (export "hook_on_error") (param $p i32) (param $l i32) (result i32)
        (call $storage_set (i32.const 100) (i32.const 10) (local.get $p) (local.get $l)))
      (func (export "recall") (param $ret i32) (result i32)
        (call $storage_get (i32.const 100) (i32.const 10) (local.get $ret)))
    """, name="errors-only", type="hook", capabilities="storage = true")
    add(cli, tmp_path, "errors-only")
    ok = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"a"}', "--json")
    assert {h["plugin"] for h in json.loads(ok.stdout)["hooks"]} == {"audit-hook"}
    failed = cli("tool", "run", "word-tools", "read_note", "--json")
    hooks = json.loads(failed.stdout)["hooks"]
    assert {"plugin": "errors-only", "event": "on_error", "ok": True, "error": None} in hooks
    recalled = cli("plugin", "call", "errors-only", "recall")
    assert json.loads(recalled.stdout) == {"plugin": "word-tools", "tool": "read_note",
                                           "error": "no note has been stored yet"}


def test_disabled_hooks_do_not_fire(tools_and_audit, cli):
    assert cli("plugin", "disable", "audit-hook").exit_code == 0
    done = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"a"}', "--json")
    assert json.loads(done.stdout)["hooks"] == []
    assert cli("plugin", "enable", "audit-hook").exit_code == 0
    assert events(cli) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("word-tools", "word_count", "--args", "{"),
        ("word-tools", "word_count", "--args", '{"text": 1}'),
        ("word-tools", "no_such_tool"),
        ("danger", "t"),  # risky, and no --yes
    ],
)
def test_hooks_do_not_fire_for_a_run_refused_before_the_tool_starts(tools_and_audit, cli, tmp_path, argv):
    tool_guest(tmp_path, "danger", RISK.format(2))
    add(cli, tmp_path, "danger")
    assert cli("tool", "run", *argv).exit_code == 1
    assert events(cli) == []


def test_each_hook_and_the_tool_run_in_their_own_workers(tools_and_audit, cli, tmp_path):
    second = tmp_path / "audit-2"
    shutil.copytree(tmp_path / "example-sources" / "audit-hook", second)
    toml = second / "plugin.toml"
    toml.write_text(toml.read_text().replace('name = "audit-hook"', 'name = "audit-2"'))
    assert cli("plugin", "add", "--yes", str(second)).exit_code == 0
    with Supervisor() as supervisor:
        run = ToolRunner(supervisor, Registry(paths.plugins_dir())).run(
            "word-tools", "word_count", '{"text":"a b c d"}', confirm=lambda info: False)
    assert run.success and run.result.output == "4"
    pids = {(h.plugin, h.event.value): h.worker_pid for h in run.hooks}
    assert set(pids) == {(p, e) for p in ("audit-2", "audit-hook") for e in ("on_tool_execute", "on_tool_complete")}
    assert None not in pids.values()
    assert pids["audit-hook", "on_tool_execute"] == pids["audit-hook", "on_tool_complete"]
    assert len({pids["audit-hook", "on_tool_execute"], pids["audit-2", "on_tool_execute"], run.worker_pid}) == 3
    assert events(cli, "audit-2") == events(cli, "audit-hook")


def test_a_hook_in_an_endless_loop_is_stopped_and_the_tool_still_succeeds(tools_and_audit, cli, tmp_path):
    hook_guest(tmp_path, "spinner", "(loop $l (br $l)) (i32.const 0)")
    add(cli, tmp_path, "spinner")
    with Supervisor(worker_limits=WorkerLimits(call_cpu_ms=200)) as supervisor:
        run = ToolRunner(supervisor, Registry(paths.plugins_dir())).run(
            "word-tools", "word_count", '{"text":"a"}', confirm=lambda info: False)
    assert run.success and run.result.output == "1"
    failures = {(h.plugin, h.event.value, h.error.split(":")[0]) for h in run.hooks if not h.ok}
    assert failures == {("spinner", "on_tool_execute", "cpu_limit"), ("spinner", "on_tool_complete", "cpu_limit")}
    assert len(events(cli)) == 2


def test_a_hook_whose_module_cannot_start_is_a_warning(tools_and_audit, cli, tmp_path):
    hook_guest(tmp_path, "no-start", "(i32.const 0)", extra="(func $boom unreachable) (start $boom)")
    add(cli, tmp_path, "no-start")
    done = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"a"}')
    assert (done.exit_code, done.stdout) == (0, "1\n")
    assert "Warning: hook 'no-start' failed in on_tool_execute: instantiate: " in done.stderr
    assert len(events(cli)) == 2


def test_through_the_daemon_each_plugin_has_its_own_worker_and_a_bad_hook_is_a_warning(
        tools_and_audit, cli, tmp_path, run_tark):
    hook_guest(tmp_path, "bad-hook", "unreachable")
    add(cli, tmp_path, "bad-hook")
    started = run_tark("supervisor", "start")
    assert started.returncode == 0, started.stderr
    try:
        done = run_tark("tool", "run", "word-tools", "word_count", "--args", '{"text":"via the daemon"}', "--json")
        status = json.loads(run_tark("supervisor", "status", "--json").stdout)
    finally:
        run_tark("supervisor", "stop")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "3"
    assert "Warning: hook 'bad-hook' failed in on_tool_execute: trap: " in done.stderr
    workers = {w["name"]: w["pid"] for w in status["workers"]}
    assert set(workers) == {"word-tools", "audit-hook", "bad-hook"}
    assert len(set(workers.values())) == 3
    assert len(events(cli)) == 2
