"""The thin client (docs/performance.md): `tark --help` imports click and nothing heavy, and a command that
only forwards to a running daemon never imports the runtime (wasmtime, httpx, jsonschema, rich, the capability
modules, the worker pool). Every check runs the real `tark` script in a new interpreter with `-X importtime`
against a real daemon and reads which modules that process imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from supervisor.cli.commands import PLUGIN_COMMANDS, TOP_COMMANDS, USER_ERRORS
from supervisor.cli.lazy import LazyCommand
from wasm_fixtures import make_guest

REPO_ROOT = Path(__file__).resolve().parent.parent
TARK_SCRIPT = Path(sys.executable).parent / "tark"

ECHO = r"""
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (local.get $p) (local.get $l)) (local.get $l))
"""

# What no command that forwards to the daemon, or only reads the registry, may import: the runtime lives in
# the daemon (or in the embedded transport, which these commands do not reach while a daemon runs).
RUNTIME_MODULES = ("wasmtime", "httpx", "httpcore", "zmq", "worker", "supervisor.capabilities",
                   "supervisor.supervisor", "supervisor.workers", "supervisor.host", "supervisor.daemon",
                   "supervisor.control", "supervisor.modules", "supervisor.consent.live")
# ... and what `tark plugin call` needs none of either.
CALL_NEEDS_NONE_OF = ("jsonschema", "rich", "attrs", "cattrs", "psutil", "platformdirs", "supervisor.registry",
                      "supervisor.consent", "policy.manifest")
# `tark --help` imports click and our CLI skeleton only.
HELP_MODULES = {"supervisor", "supervisor.cli", "supervisor.cli.main", "supervisor.cli.lazy",
                "supervisor.cli.commands", "policy", "policy.text"}


def imported_by(*args: str, check: bool = True) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the real `tark ARGS` under `-X importtime`; its result and every module it imported."""
    entry = [str(TARK_SCRIPT)] if TARK_SCRIPT.exists() else ["-m", "supervisor.cli.main"]
    done = subprocess.run([sys.executable, "-X", "importtime", *entry, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ), check=False)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    modules.discard("package")  # the header line
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done, modules


def among(modules: set[str], names: tuple[str, ...] = RUNTIME_MODULES) -> set[str]:
    """The modules that are, or are inside, one of `names`."""
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


@pytest.fixture
def daemon(tmp_path: Path, cli, run_tark):
    make_guest(tmp_path / "src", ECHO, name="thin")
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    started = run_tark("supervisor", "start")
    assert started.returncode == 0, started.stderr
    yield
    run_tark("supervisor", "stop")


def test_help_imports_click_and_the_command_table_only():
    done, modules = imported_by("--help")
    ours = {m for m in modules if m.split(".")[0] in ("supervisor", "policy", "worker")}
    assert ours == HELP_MODULES
    assert not {m for m in modules if m.split(".")[0] in ("msgspec", "attrs", "rich", "wasmtime", "platformdirs")}
    for entry in TOP_COMMANDS:
        assert f"  {entry.name} " in done.stdout


def test_group_help_lists_its_commands_without_importing_them():
    done, modules = imported_by("plugin", "--help")
    ours = {m for m in modules if m.split(".")[0] in ("supervisor", "policy", "worker")}
    assert ours == HELP_MODULES | {"supervisor.logging_setup"}  # the root group's callback sets up logging
    for entry in PLUGIN_COMMANDS:
        assert f"  {entry.name} " in done.stdout


def test_a_call_through_the_daemon_imports_none_of_the_runtime(daemon, run_tark):
    done, modules = imported_by("plugin", "call", "thin", "echo", "hi", "--json")
    assert json.loads(done.stdout) == {"ret": 2, "output": "hi"}
    assert among(modules) == set()
    assert among(modules, CALL_NEEDS_NONE_OF) == set()
    workers = json.loads(run_tark("supervisor", "status", "--json").stdout)["workers"]
    assert [(w["name"], w["calls"]) for w in workers] == [("thin", 1)]  # it was the daemon that ran it


def test_a_refused_call_through_the_daemon_is_a_user_error_without_the_runtime(daemon):
    done, modules = imported_by("plugin", "call", "thin", "no_such_export", check=False)
    assert done.returncode == 1
    assert "Error: " in done.stderr and "no_such_export" in done.stderr and "Traceback" not in done.stderr
    assert among(modules) == set()


def test_without_a_daemon_the_same_command_runs_embedded_with_the_runtime(tmp_path, cli):
    make_guest(tmp_path / "src", ECHO, name="thin")
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    done, modules = imported_by("plugin", "call", "thin", "echo", "hi", "--json")
    assert json.loads(done.stdout) == {"ret": 2, "output": "hi"}
    assert {"wasmtime", "supervisor.supervisor", "supervisor.workers"} <= modules  # the check above can see them


@pytest.mark.parametrize("args", [
    ("supervisor", "status", "--json"),
    ("supervisor", "status"),
    ("plugin", "status", "--json"),
    ("plugin", "list", "--json"),
    ("plugin", "info", "thin", "--json"),
    ("channel", "status", "--json"),
], ids=" ".join)
def test_status_and_read_commands_import_none_of_the_runtime(daemon, args):
    done, modules = imported_by(*args)
    assert done.stdout.strip()
    assert among(modules) == set()
    if "--json" in args:
        assert among(modules, ("rich",)) == set()


def test_a_tool_run_through_the_daemon_imports_none_of_the_runtime(tmp_path, cli, run_tark):
    from test_tools import install_examples

    install_examples(cli, tmp_path, "word-tools")
    assert run_tark("supervisor", "start").returncode == 0
    try:
        done, modules = imported_by("tool", "run", "word-tools", "word_count", "--args", '{"text": "a b c"}',
                                    "--json")
        assert json.loads(done.stdout)["success"] is True
        assert among(modules) == set()
        assert among(modules, ("rich",)) == set()
    finally:
        run_tark("supervisor", "stop")


def test_a_chat_with_an_adapter_provider_through_the_daemon_imports_none_of_the_runtime(tmp_path, cli, run_tark):
    from test_tools import install_examples

    install_examples(cli, tmp_path, "echo-provider")
    assert run_tark("supervisor", "start").returncode == 0
    try:
        done, modules = imported_by("chat", "--provider", "echo-provider", "--json", "hello")
        assert json.loads(done.stdout)["text"] == "hello"
        assert among(modules) == set()  # httpx and the network guard are auth-only mode's, imported for it alone
        assert among(modules, ("rich",)) == set()
    finally:
        run_tark("supervisor", "stop")


@pytest.mark.parametrize("entry,group", [(e, None) for e in TOP_COMMANDS] + [(e, "plugin") for e in PLUGIN_COMMANDS],
                         ids=lambda v: v.name if isinstance(v, LazyCommand) else str(v))
def test_each_listed_help_line_is_the_commands_own(entry: LazyCommand, group: str | None):
    command = entry.load()
    assert command.name == entry.name
    for limit in (500,) if command.short_help else (30, 45, 80, 500):  # an explicit short_help is never cut
        listed = click.Command(entry.name, help=entry.help).get_short_help_str(limit)
        assert listed == command.get_short_help_str(limit), (
            f"update the help of '{entry.name}' in supervisor/cli/commands.py to its command's first sentence")


def test_every_listed_user_error_is_an_exception_type():
    import importlib

    for name in USER_ERRORS:
        module_name, _, attribute = name.partition(":")
        error = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(error, type) and issubclass(error, Exception), name
