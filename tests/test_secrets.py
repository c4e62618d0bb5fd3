"""Per-plugin secrets: set from stdin or a hidden prompt (never argv), stored privately by the supervisor, answered
by env.get before the environment, isolated between plugins, picked up by a running daemon without a restart."""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import stat
import subprocess
import time
from pathlib import Path

import pytest

from supervisor.capabilities.audit import default_audit_path
from supervisor.host import PluginHost
from supervisor.registry import Registry
from wasm_fixtures import make_guest
from worker import protocol

ENV_EXPORT = r"""
  (func (export "env") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (call $env_get (local.get $p) (local.get $l) (local.get $ret)))
"""


@pytest.fixture
def two_plugins(tmp_path: Path, cli, plugins_root: Path) -> Registry:
    for name in ("alpha", "beta"):
        make_guest(tmp_path / name, ENV_EXPORT, name=name, capabilities='env = ["API_TOKEN"]')
        assert cli("plugin", "add", "--yes", str(tmp_path / name)).exit_code == 0
    return Registry(plugins_root)


def env(host: PluginHost, name: str) -> protocol.HostReply:
    return host.handle(protocol.EnvGet(host_call_id=1, name=name))


def test_the_value_cannot_be_passed_as_an_argument(cli, two_plugins: Registry, isolated_env: Path) -> None:
    result = cli("plugin", "secret", "set", "alpha", "API_TOKEN", "hunter2")
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()
    assert not (isolated_env / "secrets" / "alpha.json").exists()


def test_a_secret_from_stdin_is_private_and_listed_by_name_only(cli, two_plugins: Registry,
                                                                isolated_env: Path) -> None:
    result = cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="hunter2\n")
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    stored = isolated_env / "secrets" / "alpha.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert json.loads(stored.read_text()) == {"API_TOKEN": "hunter2"}  # the trailing newline is not part of it
    assert not any("hunter2" in p.read_text(errors="replace")
                   for p in two_plugins.get("alpha").directory.rglob("*") if p.is_file() and p.suffix != ".wasm")
    assert cli("plugin", "secret", "list", "alpha").output == "API_TOKEN\n"
    assert json.loads(cli("plugin", "secret", "list", "alpha", "--json").output) == {
        "plugin": "alpha", "keys": ["API_TOKEN"]}
    trail = default_audit_path().read_text()
    assert '"kind": "secret_set"' in trail and "API_TOKEN" in trail and "hunter2" not in trail
    assert cli("plugin", "secret", "unset", "alpha", "API_TOKEN").exit_code == 0
    assert cli("plugin", "secret", "list", "alpha").output == "No secrets for alpha.\n"
    missing = cli("plugin", "secret", "unset", "alpha", "API_TOKEN")
    assert missing.exit_code == 1 and "has no secret named API_TOKEN" in missing.output


def test_bad_names_values_and_plugins_are_user_errors(cli, two_plugins: Registry) -> None:
    for args, stdin, message in [
        (("alpha", "API-TOKEN"), "x", "Invalid secret name"),
        (("alpha", "API_TOKEN"), "\n", "value is empty"),
        (("ghost", "API_TOKEN"), "x", "Plugin 'ghost' not found"),
    ]:
        result = cli("plugin", "secret", "set", *args, input=stdin)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_setting_an_undeclared_name_warns_that_the_plugin_cannot_read_it(cli, two_plugins: Registry) -> None:
    result = cli("plugin", "secret", "set", "alpha", "OTHER", input="x")
    assert result.exit_code == 0 and "does not declare env 'OTHER'" in result.output


def test_one_plugin_never_sees_another_plugins_secret(cli, two_plugins: Registry, tmp_path: Path) -> None:
    assert cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="alpha-only").exit_code == 0
    environ = {"API_TOKEN": "from-the-environment"}
    with PluginHost(two_plugins.get("alpha"), environ=environ) as alpha, \
            PluginHost(two_plugins.get("beta"), environ=environ) as beta:
        assert env(alpha, "API_TOKEN").data == b"alpha-only"  # the plugin's own secret wins
        assert env(beta, "API_TOKEN").data == b"from-the-environment"
    with PluginHost(two_plugins.get("beta"), environ={}) as beta:
        assert env(beta, "API_TOKEN").code == 0


def test_a_secret_is_still_only_readable_through_a_declared_name(cli, two_plugins: Registry) -> None:
    assert cli("plugin", "secret", "set", "alpha", "UNDECLARED", input="x").exit_code == 0
    with PluginHost(two_plugins.get("alpha"), environ={}) as alpha:
        assert env(alpha, "UNDECLARED").code == -2


def test_a_running_host_sees_set_and_unset_on_its_next_call(cli, two_plugins: Registry) -> None:
    with PluginHost(two_plugins.get("alpha"), environ={"API_TOKEN": "env"}) as alpha:
        assert env(alpha, "API_TOKEN").data == b"env"
        assert cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="first").exit_code == 0
        assert env(alpha, "API_TOKEN").data == b"first"
        assert cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="second").exit_code == 0
        assert env(alpha, "API_TOKEN").data == b"second"
        assert cli("plugin", "secret", "unset", "alpha", "API_TOKEN").exit_code == 0
        assert env(alpha, "API_TOKEN").data == b"env"


def test_a_secrets_file_others_can_read_is_not_used(cli, two_plugins: Registry, isolated_env: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    assert cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="s").exit_code == 0
    os.chmod(isolated_env / "secrets" / "alpha.json", 0o644)
    with caplog.at_level(logging.ERROR), PluginHost(two_plugins.get("alpha"), environ={"API_TOKEN": "e"}) as alpha:
        assert env(alpha, "API_TOKEN").code == -1
    assert "readable or writable by others" in caplog.text


def test_a_daemon_answers_a_newly_set_secret_without_restart(cli, two_plugins: Registry, run_tark) -> None:
    started = run_tark("supervisor", "start")
    assert started.returncode == 0, started.stderr
    try:
        before = run_tark("plugin", "call", "alpha", "env", "API_TOKEN", "--json")
        assert json.loads(before.stdout) == {"ret": 0, "output": ""}, before.stderr  # the daemon has no such variable
        assert cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="live-secret").exit_code == 0
        after = run_tark("plugin", "call", "alpha", "env", "API_TOKEN", "--json")
        assert json.loads(after.stdout) == {"ret": 11, "output": "live-secret"}
        other = run_tark("plugin", "call", "beta", "env", "API_TOKEN", "--json")
        assert json.loads(other.stdout) == {"ret": 0, "output": ""}
    finally:
        run_tark("supervisor", "stop")


def test_on_a_terminal_the_value_is_asked_hidden_twice(two_plugins: Registry, tark_argv: list[str],
                                                       isolated_env: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: tark with the pty as its terminal
        os.execvpe(tark_argv[0], [*tark_argv, "plugin", "secret", "set", "alpha", "API_TOKEN"], dict(os.environ))
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while marker not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 1024)
                except OSError:
                    return

    read_until(b"Value of API_TOKEN:")
    os.write(fd, b"typed-secret\n")
    read_until(b"Repeat for confirmation:")
    os.write(fd, b"typed-secret\n")
    read_until(b"set for alpha")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"typed-secret" not in seen  # never echoed
    assert json.loads((isolated_env / "secrets" / "alpha.json").read_text()) == {"API_TOKEN": "typed-secret"}


def test_removing_a_plugin_forgets_its_secrets(cli, two_plugins: Registry, tmp_path: Path) -> None:
    assert cli("plugin", "secret", "set", "alpha", "API_TOKEN", input="old-owner").exit_code == 0
    assert cli("plugin", "remove", "alpha").exit_code == 0
    assert cli("plugin", "add", "--yes", str(tmp_path / "alpha")).exit_code == 0  # someone else's plugin, same name
    assert cli("plugin", "secret", "list", "alpha").output == "No secrets for alpha.\n"


def test_a_plugin_cannot_read_secret_files_through_fs_read(cli, tmp_path: Path, isolated_env: Path) -> None:
    make_guest(tmp_path / "victim", ENV_EXPORT, name="victim", capabilities='env = ["API_TOKEN"]')
    make_guest(tmp_path / "thief", ENV_EXPORT, name="thief",
               capabilities=f'fs_read = ["{isolated_env}/secrets/*", "{isolated_env}/secrets/victim.json"]')
    for name in ("victim", "thief"):
        assert cli("plugin", "add", "--yes", str(tmp_path / name)).exit_code == 0
    assert cli("plugin", "secret", "set", "victim", "API_TOKEN", input="victim-key").exit_code == 0
    registry = Registry(isolated_env / "plugins")
    with PluginHost(registry.get("thief"), environ={}) as thief:
        reply = thief.handle(protocol.FsRead(host_call_id=1, path=str(isolated_env / "secrets" / "victim.json")))
    assert reply.code == -2 and b"victim-key" not in reply.data
