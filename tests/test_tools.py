"""Tool plugins (docs/tool-hook-abi.md): the ABI's data rules, `tark tool list` and `tark tool run`, with the
example plugin examples/word-tools and small misbehaving guests, each plugin in its own real worker."""

from __future__ import annotations

import importlib.util
import os
import pty
import subprocess
import json
import shutil
from pathlib import Path

import pytest

from policy.tools import (
    ToolAbiError,
    ToolArgsError,
    ToolDef,
    after_tool,
    before_tool,
    parse_tool_result,
    parse_tools,
    risk_level,
    tool_error,
    validate_args,
)
from supervisor import paths
from supervisor.registry import Registry
from supervisor.supervisor import Supervisor
from supervisor.tools import ToolRunner
from supervisor.workers import WorkerLimits
from wasm_fixtures import make_guest

REPO = Path(__file__).resolve().parent.parent
WORD_COUNT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                     "additionalProperties": False}


def install_examples(cli, tmp_path: Path, *names: str) -> None:
    """Copy examples/<name> for each name, build its plugin.wasm from the WAT and `tark plugin add` it."""
    spec = importlib.util.spec_from_file_location("examples_build", REPO / "examples" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    root = tmp_path / "example-sources"
    for name in names:
        shutil.copytree(REPO / "examples" / name, root / name, ignore=shutil.ignore_patterns("*.wasm"))
    assert {d.name for d in build.build_examples(root)} == set(names)
    for name in names:
        added = cli("plugin", "add", "--yes", str(root / name))
        assert added.exit_code == 0, added.output


def tool_guest(tmp_path: Path, name: str, body: str, *, tools: str | None = None, type: str = "tool") -> None:
    """A tool plugin whose tool_get_tools returns `tools` (JSON text, default one tool "t") plus `body`."""
    tools = tools if tools is not None else json.dumps(
        [{"name": "t", "description": "test tool", "parameters_schema": {"type": "object"}}])
    data = tools.replace("\\", "\\\\").replace('"', '\\"')
    make_guest(tmp_path / "src" / name, f"""
      (data (i32.const 1024) "{data}")
      (func (export "tool_get_tools") (param $ret i32) (result i32)
        (memory.copy (local.get $ret) (i32.const 1024) (i32.const {len(tools.encode())}))
        (i32.const {len(tools.encode())}))
      {body}
    """, name=name, type=type, capabilities="storage = true")


def add(cli, tmp_path: Path, name: str) -> None:
    added = cli("plugin", "add", "--yes", str(tmp_path / "src" / name))
    assert added.exit_code == 0, added.output


def execute_returning(text: str, *, negative: bool = False) -> str:
    """A tool_execute that writes `text` to its result buffer and returns its length (negated if `negative`)."""
    data = text.replace("\\", "\\\\").replace('"', '\\"')
    n = len(text.encode())
    return f"""
      (data (i32.const 2048) "{data}")
      (func (export "tool_execute") (param i32 i32 i32 i32) (param $ret i32) (result i32)
        (memory.copy (local.get $ret) (i32.const 2048) (i32.const {n})) (i32.const {-n if negative else n}))"""


RISK = '(func (export "tool_get_risk_level") (param i32 i32) (result i32) (i32.const {}))'


@pytest.fixture
def word_tools(cli, tmp_path: Path) -> str:
    install_examples(cli, tmp_path, "word-tools")
    return "word-tools"


# ------------------------------------------------------------------ the ABI's data rules (pure)


def test_a_tool_list_keeps_valid_entries_and_names_each_bad_one():
    listing = parse_tools(json.dumps([
        {"name": "ok", "description": "fine", "parameters_schema": WORD_COUNT_SCHEMA},
        {"name": "as-string", "parameters_schema": json.dumps({"type": "object"})},
        {"name": "bad name!", "parameters_schema": {}},
        {"name": "x" * 65, "parameters_schema": {}},
        {"name": "no_schema"},
        {"name": "wrong_schema", "parameters_schema": {"type": 5}},
        {"name": "dup", "parameters_schema": {}},
        {"name": "dup", "parameters_schema": {}},
        "not an object",
    ]))
    assert [t.name for t in listing.tools] == ["ok", "as-string"]
    assert listing.tools[1].parameters_schema == {"type": "object"}
    assert listing.get("ok").description == "fine" and listing.get("dup") is None
    problems = "\n".join(listing.problems)
    assert len(listing.problems) == 6
    for expected in ("tool #3: name \"bad name!\"", "tool #4", "'no_schema': parameters_schema is missing",
                     "'wrong_schema': parameters_schema is not a valid JSON Schema: at $.type",
                     "tool name 'dup' appears 2 times", "tool #9: is a string, not an object"):
        assert expected in problems


@pytest.mark.parametrize("text", ["{", '{"name": "t"}', "null", "[" * 100_000])
def test_a_tool_list_that_is_no_json_array_is_an_abi_error(text):
    with pytest.raises(ToolAbiError, match="tool_get_tools"):
        parse_tools(text)


def test_risk_levels_are_0_to_3_and_risky_ones_need_confirmation():
    assert [risk_level(n).label for n in range(4)] == ["read-only", "write", "risky", "dangerous"]
    assert [risk_level(n).needs_confirmation for n in range(4)] == [False, False, True, True]
    for bad in (-1, 4):
        with pytest.raises(ToolAbiError, match=str(bad)):
            risk_level(bad)


def test_tool_results_must_have_a_boolean_success():
    assert parse_tool_result('{"success":true,"output":"3","error":null}') == parse_tool_result(
        '{"success":true,"output":"3","extra":1}')
    assert parse_tool_result('{"success":false}').error == "the tool reported failure without a message"
    for bad, message in [('{"output":"x"}', "'success' is null"), ('{"success":"yes"}', "'success' is a string"),
                         ('{"success":true,"output":5}', "'output' is a number"), ("[]", "an array"),
                         ("nope", "not valid JSON")]:
        with pytest.raises(ToolAbiError, match=message):
            parse_tool_result(bad)


def test_arguments_are_checked_against_the_schema_naming_the_field():
    tool = ToolDef("word_count", "", WORD_COUNT_SCHEMA)
    validate_args(tool, {"text": "a b"})
    for args, message in [({}, "'text' is a required property"), ({"text": 5}, r"at \$.text: 5 is not of type"),
                          ({"text": "a", "x": 1}, "'x' was unexpected"), ([], "is not of type 'object'")]:
        with pytest.raises(ToolArgsError, match=message):
            validate_args(tool, args)


def test_a_schema_ref_is_never_fetched():
    tool = ToolDef("t", "", {"$ref": "http://127.0.0.1:9/schema.json"})
    with pytest.raises(ToolArgsError, match="cannot be resolved"):
        validate_args(tool, {})


def test_hook_payloads():
    result = parse_tool_result('{"success":true,"output":"3","error":null}')
    assert before_tool("word_count", '{"text":"a"}').args == ("word_count", '{"text":"a"}')
    assert after_tool("word_count", result).args == ("word_count", '{"success":true,"output":"3","error":null}')
    [payload] = tool_error("word-tools", "read_note", "no note").args
    assert json.loads(payload) == {"plugin": "word-tools", "tool": "read_note", "error": "no note"}


# ------------------------------------------------------------------ tark tool list


def test_list_shows_the_example_tools_with_risk_and_parameters(word_tools, cli):
    listed = cli("tool", "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[2].strip(): line for line in listed.output.splitlines() if "word-tools" in line}
    assert set(rows) == {"word_count", "store_note", "read_note"}
    assert "read-only" in rows["word_count"] and "text*: string" in rows["word_count"]
    assert "write" in rows["store_note"]
    as_json = json.loads(cli("tool", "list", "--json").output)
    word_count = next(t for t in as_json if t["name"] == "word_count")
    assert word_count == {"plugin": "word-tools", "name": "word_count", "risk_level": "read-only",
                          "description": word_count["description"], "parameters_schema": WORD_COUNT_SCHEMA}


def test_a_broken_tool_plugin_is_a_warning_and_the_others_still_list(word_tools, cli, tmp_path):
    make_guest(tmp_path / "src" / "trapper", '(func (export "tool_get_tools") (param i32) (result i32) unreachable)',
               name="trapper", type="tool")
    tool_guest(tmp_path, "garbage", "", tools="this is not json")
    tool_guest(tmp_path, "half-bad", RISK.format(0),
               tools=json.dumps([{"name": "good", "parameters_schema": {}}, {"name": "no good"}]))
    tool_guest(tmp_path, "bad-risk", RISK.format(9))
    for name in ("trapper", "garbage", "half-bad", "bad-risk"):
        add(cli, tmp_path, name)
    listed = cli("tool", "list", "--json")
    assert listed.exit_code == 0
    tools = {(t["plugin"], t["name"]): t["risk_level"] for t in json.loads(listed.stdout)}
    assert tools == {("word-tools", "word_count"): "read-only", ("word-tools", "store_note"): "write",
                     ("word-tools", "read_note"): "read-only", ("half-bad", "good"): "read-only",
                     ("bad-risk", "t"): "unknown"}
    warnings = listed.stderr
    assert "Warning: tool plugin 'trapper': tool_get_tools failed (trap)" in warnings
    assert "Warning: tool plugin 'garbage': tool_get_tools output is not valid JSON" in warnings
    assert "Warning: tool plugin 'half-bad': tool #2: name \"no good\"" in warnings
    assert "Warning: tool plugin 'bad-risk': risk level of tool 't' unavailable" in warnings
    assert "risk levels are 0 (read-only) to 3" in warnings
    assert "Traceback" not in listed.output


def test_disabled_tool_plugins_and_other_plugin_types_are_not_listed(word_tools, cli, tmp_path):
    tool_guest(tmp_path, "hooky", "", type="hook")
    add(cli, tmp_path, "hooky")
    assert cli("plugin", "disable", "word-tools").exit_code == 0
    listed = cli("tool", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    assert "No tools." in cli("tool", "list").output


# ------------------------------------------------------------------ tark tool run


def test_run_prints_the_tool_output(word_tools, run_tark):
    done = run_tark("tool", "run", "word-tools", "word_count", "--args", '{"text": "the quick  brown fox"}')
    assert (done.returncode, done.stdout, done.stderr) == (0, "4\n", "")


def test_run_json_is_one_object(word_tools, cli):
    done = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"a b"}', "--json")
    assert done.exit_code == 0
    assert json.loads(done.stdout) == {"plugin": "word-tools", "tool": "word_count", "success": True,
                                       "output": "2", "error": None, "hooks": []}


def test_a_write_tool_runs_without_confirmation_and_its_storage_persists(word_tools, cli):
    note = 'buy "milk" ünd eggs'
    stored = cli("tool", "run", "word-tools", "store_note", "--args", json.dumps({"note": note}))
    assert (stored.exit_code, stored.output) == (0, "note saved\n")
    read = cli("tool", "run", "word-tools", "read_note")
    assert (read.exit_code, read.stdout) == (0, note + "\n")


def test_a_failing_tool_exits_1_naming_tool_plugin_and_cause(word_tools, cli):
    done = cli("tool", "run", "word-tools", "read_note", "--json")
    assert done.exit_code == 1
    assert json.loads(done.stdout)["error"] == "no note has been stored yet"
    assert "Error: tool 'read_note' of plugin 'word-tools' failed: no note has been stored yet" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('{"text": ', "Error: --args is not valid JSON: Expecting value at line 1 column 10"),
        ("[" * 100_000, "Error: --args is not valid JSON"),
        ('{"text": 5}', "Error: --args do not match the parameters of tool 'word_count': at $.text: 5 is not of type"),
        ("{}", "'text' is a required property"),
        ('{"text": "a", "lines": 2}', "Additional properties are not allowed ('lines' was unexpected)"),
    ],
)
def test_bad_arguments_are_refused_before_the_tool_runs(word_tools, cli, args, message):
    done = cli("tool", "run", "word-tools", "word_count", "--args", args)
    assert done.exit_code == 1
    assert message in done.stderr
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("word-tools", "nope"),
         "plugin 'word-tools' has no tool 'nope' (its tools: word_count, store_note, read_note)"),
        (("ghost", "t"), "Plugin 'ghost' not found"),
        (("hooky", "t"), "plugin 'hooky' is a hook plugin, not a tool plugin"),
    ],
)
def test_unknown_tools_and_plugins_are_named(word_tools, cli, tmp_path, argv, message):
    tool_guest(tmp_path, "hooky", "", type="hook")
    add(cli, tmp_path, "hooky")
    done = cli("tool", "run", *argv)
    assert done.exit_code == 1
    assert f"Error: {message}" in done.stderr


def test_a_disabled_tool_plugin_does_not_run(word_tools, cli):
    assert cli("plugin", "disable", "word-tools").exit_code == 0
    done = cli("tool", "run", "word-tools", "word_count", "--args", '{"text":"a"}')
    assert done.exit_code == 1
    assert "Plugin 'word-tools' is disabled; enable it with: tark plugin enable word-tools" in done.stderr


@pytest.mark.parametrize(("risk", "label"), [(RISK.format(2), "risky"), (RISK.format(3), "dangerous"),
                                             ("", "risky")])  # no tool_get_risk_level: risky by default
def test_risky_and_dangerous_tools_need_yes(cli, tmp_path, risk, label):
    tool_guest(tmp_path, "danger", risk + execute_returning('{"success":true,"output":"done","error":null}'))
    add(cli, tmp_path, "danger")
    refused = cli("tool", "run", "danger", "t", input="y\n")  # not a terminal: no question is asked
    assert refused.exit_code == 1
    assert f"Error: tool 't' of plugin 'danger' is {label}; re-run with --yes to allow it" in refused.stderr
    allowed = cli("tool", "run", "danger", "t", "--yes")
    assert (allowed.exit_code, allowed.stdout) == (0, "done\n")


def test_a_failing_risk_level_stops_the_run(cli, tmp_path):
    tool_guest(tmp_path, "unsure", RISK.format(-2) + execute_returning('{"success":true}'))
    add(cli, tmp_path, "unsure")
    done = cli("tool", "run", "unsure", "t", "--yes")
    assert done.exit_code == 1
    assert "risk level of tool 't' unavailable: tool_get_risk_level returned error code: -2" in done.stderr


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (RISK.format(0) + execute_returning('{"error":"disk on fire"}', negative=True),
         "tool_execute disk on fire (code -24)"),
        (RISK.format(0) + '(func (export "tool_execute") (param i32 i32 i32 i32 i32) (result i32) (i32.const -5))',
         "tool_execute returned error code: -5"),
        (RISK.format(0) + execute_returning("not json"), "tool_execute output is not valid JSON"),
        (RISK.format(0) + execute_returning('{"success":1}'),
         "tool_execute result: 'success' is a number; expected true or false"),
        (RISK.format(0) + '(func (export "tool_execute") (param i32 i32 i32 i32 i32) (result i32) unreachable)',
         "trap: "),
        (RISK.format(0), "Plugin does not export 'tool_execute' function"),
    ],
)
def test_every_kind_of_tool_failure_is_a_clear_error(cli, tmp_path, body, cause):
    tool_guest(tmp_path, "flaky", body)
    add(cli, tmp_path, "flaky")
    done = cli("tool", "run", "flaky", "t")
    assert done.exit_code == 1
    assert f"Error: tool 't' of plugin 'flaky' failed: {cause}" in done.stderr
    assert "Traceback" not in done.output


def test_a_tool_in_an_endless_loop_is_stopped_by_its_timeout(cli, tmp_path):
    tool_guest(tmp_path, "spinner", RISK.format(0) +
               '(func (export "tool_execute") (param i32 i32 i32 i32 i32) (result i32)'
               ' (loop $l (br $l)) (i32.const 0))')
    add(cli, tmp_path, "spinner")
    done = cli("tool", "run", "spinner", "t", "--timeout", "0.5")
    assert done.exit_code == 1
    assert "Error: tool 't' of plugin 'spinner' failed: timeout" in done.stderr


def test_a_failing_tool_plugin_does_not_affect_another_ones_run(word_tools, cli, tmp_path):
    tool_guest(tmp_path, "crasher", RISK.format(0) +
               '(func (export "tool_execute") (param i32 i32 i32 i32 i32) (result i32) unreachable)')
    add(cli, tmp_path, "crasher")
    with Supervisor(worker_limits=WorkerLimits(call_cpu_ms=2000)) as supervisor:
        runner = ToolRunner(supervisor, Registry(paths.plugins_dir()))
        crashed = runner.run("crasher", "t", "{}", confirm=lambda info: False)
        counted = runner.run("word-tools", "word_count", '{"text":"still works"}', confirm=lambda info: False)
        again = runner.run("crasher", "t", "{}", confirm=lambda info: False)
    assert not crashed.success and crashed.result.error.startswith("trap")
    assert counted.success and counted.result.output == "2"
    assert not again.success
    # each plugin runs in its own worker, and the crashed plugin's worker survived its trap
    assert None not in (crashed.worker_pid, counted.worker_pid)
    assert crashed.worker_pid != counted.worker_pid
    assert again.worker_pid == crashed.worker_pid


@pytest.mark.parametrize(("answer", "returncode"), [("y", 0), ("n", 1)])
def test_on_a_terminal_a_risky_tool_asks_first(cli, tmp_path, tark_argv, answer, returncode):
    tool_guest(tmp_path, "danger", RISK.format(3) + execute_returning('{"success":true,"output":"done","error":null}'))
    add(cli, tmp_path, "danger")
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([*tark_argv, "tool", "run", "danger", "t"], stdin=terminal,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(controller, f"{answer}\n".encode())
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert "Tool 't' of plugin 'danger' is dangerous. Run it? [y/N]" in stderr
    assert process.returncode == returncode, stderr
    if answer == "y":
        assert stdout == "done\n"
    else:
        assert "Error: tool 't' of plugin 'danger' is dangerous; re-run with --yes to allow it" in stderr
