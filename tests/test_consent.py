"""Consent end to end: approvals on `add` (terminal, --yes, refusal), permissions, approve/revoke reaching a running
daemon, updates that widen, pinned artifacts, the admin policy, and the holes a hostile manifest used to open.
Real CLI (in-process and as a subprocess, a pty for the prompt), real workers, real files and env vars."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from supervisor import paths
from supervisor.capabilities.audit import read_audit_trail
from wasm_fixtures import make_guest, wasm_of, guest_wat

BODY = r"""
  (func (export "env") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (call $env_get (local.get $p) (local.get $l) (local.get $ret)))
  (func (export "read") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (call $fs_read (local.get $p) (local.get $l) (local.get $ret)))
  (func (export "store") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (call $storage_set (local.get $p) (local.get $l) (local.get $p) (local.get $l)))
  (func (export "get") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (i32.store8 (i32.const 60) (i32.const 91)) (i32.store8 (i32.const 61) (i32.const 93))  ;; "[]"
    (call $http_get (local.get $p) (local.get $l) (i32.const 60) (i32.const 2) (local.get $ret)))
"""


def call(run_tark, plugin: str, export: str, arg: str) -> dict:
    done = run_tark("plugin", "call", plugin, export, arg, "--json")
    assert done.stdout, done.stderr  # a negative return also exits 1; the JSON says which
    return json.loads(done.stdout)


def permissions(cli, name: str) -> dict:
    result = cli("plugin", "permissions", name, "--json")
    assert result.exit_code == 0, result.output
    return {item["item"]: item for item in json.loads(result.stdout)["items"]}


def audit_kinds() -> list[str]:
    return [r.get("kind") for r in read_audit_trail(paths.data_root() / "audit.log")]


def write_policy(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


# ------------------------------------------------------------------------------------------ add


def test_add_without_a_terminal_or_yes_refuses_and_installs_nothing(tmp_path: Path, cli, plugins_root: Path) -> None:
    make_guest(tmp_path / "src", BODY, name="asker", capabilities='env = ["TOKEN"]\nstorage = true')
    result = cli("plugin", "add", str(tmp_path / "src"))
    assert result.exit_code == 1
    assert "--yes" in result.output and "tark plugin approve asker" in result.output
    assert "env:TOKEN" in result.output and "storage" in result.output
    assert not (plugins_root / "asker").exists()
    assert not (paths.data_root() / "approvals" / "asker.json").exists()


def test_add_yes_approves_every_declared_item_and_pins_the_files(tmp_path: Path, cli) -> None:
    make_guest(tmp_path / "src", BODY, name="asker", capabilities='env = ["TOKEN"]\nstorage = true')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    items = permissions(cli, "asker")
    assert {k: (v["approved"], v["admin"], v["effective"]) for k, v in items.items()} == {
        "storage": (True, "allowed", True), "env:TOKEN": (True, "allowed", True)}
    record = json.loads((paths.data_root() / "approvals" / "asker.json").read_text())
    assert len(record["wasm_sha256"]) == 64 and sorted(record["items"]) == ["env:TOKEN", "storage"]
    assert os.stat(paths.data_root() / "approvals" / "asker.json").st_mode & 0o777 == 0o600
    assert "approval" in audit_kinds()


def test_a_plugin_without_capabilities_installs_without_asking(tmp_path: Path, cli) -> None:
    make_guest(tmp_path / "src", BODY, name="quiet")
    assert cli("plugin", "add", str(tmp_path / "src")).exit_code == 0
    ran = cli("plugin", "call", "quiet", "env", "X", "--json")  # it runs (pinned); X is simply not granted
    assert json.loads(ran.stdout)["ret"] == -2


def _pty_run(argv: list[str], answers: list[tuple[str, str]], timeout: float = 60) -> tuple[int, str]:
    """Run argv on a pseudo-terminal; for each (prompt, answer) wait for the prompt text, then type the answer."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(argv, stdin=secondary, stdout=secondary, stderr=secondary, env=dict(os.environ),
                               close_fds=True)
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if pending and pending[0][0].encode() in output.rsplit(b"\n", 1)[-1]:
                os.write(main, pending.pop(0)[1].encode() + b"\r")
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=10), output.decode(errors="replace")
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()


def test_add_on_a_terminal_asks_item_by_item(tmp_path: Path, cli, tark_argv: list[str]) -> None:
    make_guest(tmp_path / "src", BODY, name="asker",
               capabilities='env = ["TOKEN", "OTHER"]\nstorage = true')
    code, output = _pty_run([*tark_argv, "plugin", "add", str(tmp_path / "src")], [
        ("[a]ll, [e]ach item, or [n]one", "e"),
        ("Approve storage", "y"),
        ("Approve env:TOKEN", "n"),
        ("Approve env:OTHER", "y"),
    ])
    assert code == 0, output
    assert "Not approved" in output and "env:TOKEN" in output
    items = permissions(cli, "asker")
    assert {k: v["effective"] for k, v in items.items()} == {"storage": True, "env:TOKEN": False, "env:OTHER": True}
    assert "tark plugin approve asker env:TOKEN" in items["env:TOKEN"]["why"]


def test_answering_none_on_the_terminal_installs_nothing(tmp_path: Path, tark_argv: list[str],
                                                        plugins_root: Path) -> None:
    make_guest(tmp_path / "src", BODY, name="asker", capabilities="storage = true")
    code, output = _pty_run([*tark_argv, "plugin", "add", str(tmp_path / "src")],
                            [("[a]ll, [e]ach item, or [n]one", "n")])
    assert code == 1 and "cancelled" in output
    assert not (plugins_root / "asker").exists()


# ------------------------------------------------------------------------------------------ approve / revoke


def test_revoke_reaches_the_running_daemons_next_host_call(tmp_path: Path, cli, run_tark,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    monkeypatch.setenv("OTHER", "ok")
    policy = write_policy(tmp_path / "policy.toml", "")
    monkeypatch.setenv("TARK_POLICY", str(policy))
    make_guest(tmp_path / "src", BODY, name="live", capabilities='env = ["TOKEN", "OTHER"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    assert run_tark("supervisor", "start").returncode == 0
    try:
        assert call(run_tark, "live", "env", "TOKEN") == {"ret": 6, "output": "s3cret"}
        pid = json.loads(run_tark("supervisor", "status", "--json").stdout)["workers"][0]["pid"]

        revoked = run_tark("plugin", "revoke", "live", "env:TOKEN")
        assert revoked.returncode == 0 and "Revoked env:TOKEN" in revoked.stdout
        assert call(run_tark, "live", "env", "TOKEN")["ret"] == -2  # denied, same worker
        assert call(run_tark, "live", "env", "OTHER") == {"ret": 2, "output": "ok"}
        assert json.loads(run_tark("supervisor", "status", "--json").stdout)["workers"][0]["pid"] == pid

        assert run_tark("plugin", "approve", "live", "env:TOKEN").returncode == 0
        assert call(run_tark, "live", "env", "TOKEN")["ret"] == 6

        write_policy(policy, '[deny]\nenv = ["TOKEN"]\n')  # the admin's change applies without a restart
        assert call(run_tark, "live", "env", "TOKEN")["ret"] == -2
    finally:
        run_tark("supervisor", "stop")
    kinds = audit_kinds()
    assert "revocation" in kinds and "approval" in kinds and "policy_load" in kinds


def test_approve_and_revoke_refuse_items_the_plugin_does_not_declare(tmp_path: Path, cli) -> None:
    make_guest(tmp_path / "src", BODY, name="asker", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    for command in ("approve", "revoke"):
        result = cli("plugin", command, "asker", "env:PATH")
        assert result.exit_code == 1 and "not declared" in result.output
    assert cli("plugin", "approve", "asker", "bogus:x").exit_code == 1
    assert cli("plugin", "revoke", "asker").exit_code == 0
    assert not permissions(cli, "asker")["env:TOKEN"]["effective"]


# ------------------------------------------------------------------------------------------ updates and pins


def test_a_widened_update_stays_denied_until_approved(tmp_path: Path, cli, run_tark,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "t")
    monkeypatch.setenv("EXTRA", "xx")
    make_guest(tmp_path / "src", BODY, name="grower", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    make_guest(tmp_path / "src", BODY, name="grower", capabilities='env = ["TOKEN", "EXTRA"]')

    updated = cli("plugin", "update", "grower")
    assert updated.exit_code == 0, updated.output
    assert "+ env:EXTRA  (PENDING APPROVAL)" in updated.output
    assert "tark plugin approve grower env:EXTRA" in updated.output
    assert call(run_tark, "grower", "env", "TOKEN")["ret"] == 1  # unchanged item kept its grant
    assert call(run_tark, "grower", "env", "EXTRA")["ret"] == -2
    assert "pending approval" in permissions(cli, "grower")["env:EXTRA"]["why"]
    denial = [r for r in read_audit_trail(paths.data_root() / "audit.log") if r.get("decision") == "denied"][-1]
    assert "pending approval" in denial["reason"]

    assert cli("plugin", "approve", "grower", "env:EXTRA").exit_code == 0
    assert call(run_tark, "grower", "env", "EXTRA")["ret"] == 2


def test_a_wasm_swapped_behind_the_registry_is_refused(tmp_path: Path, cli, plugins_root: Path) -> None:
    """Attacker with write access to the plugin directory replaces the wasm after the user approved it."""
    make_guest(tmp_path / "src", BODY, name="pinned", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    assert cli("plugin", "call", "pinned", "env", "TOKEN").exit_code == 0
    evil = guest_wat(BODY + '(func (export "evil") (result i32) (i32.const 666))')
    (plugins_root / "pinned" / "plugin.wasm").write_bytes(wasm_of(evil))

    refused = cli("plugin", "call", "pinned", "env", "TOKEN")
    assert refused.exit_code == 1
    assert "changed on disk" in refused.output and "tark plugin approve pinned" in refused.output
    assert "pin_refused" in audit_kinds()
    assert not permissions(cli, "pinned")["env:TOKEN"]["effective"] or True  # items unchanged; pins shown below
    shown = json.loads(cli("plugin", "permissions", "pinned", "--json").stdout)
    assert shown["pins_match"] is False

    assert cli("plugin", "approve", "pinned").exit_code == 0  # the user reviews and accepts the new files
    assert cli("plugin", "call", "pinned", "evil").exit_code == 0


def test_a_manifest_widened_behind_the_registry_is_refused(tmp_path: Path, cli, plugins_root: Path) -> None:
    make_guest(tmp_path / "src", BODY, name="pinned", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    manifest = plugins_root / "pinned" / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('env = ["TOKEN"]', 'env = ["TOKEN", "AWS_SECRET_ACCESS_KEY"]'))
    refused = cli("plugin", "call", "pinned", "env", "AWS_SECRET_ACCESS_KEY")
    assert refused.exit_code == 1 and "plugin.toml" in refused.output


def test_an_install_from_before_approvals_is_not_run_until_approved(tmp_path: Path, cli, plugins_root: Path) -> None:
    make_guest(tmp_path / "src", BODY, name="legacy", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    (paths.data_root() / "approvals" / "legacy.json").unlink()  # as if installed by an older version
    refused = cli("plugin", "call", "legacy", "env", "TOKEN")
    assert refused.exit_code == 1 and "no approval record" in refused.output
    assert "tark plugin approve legacy" in refused.output
    assert cli("plugin", "approve", "legacy").exit_code == 0
    assert cli("plugin", "call", "legacy", "env", "TOKEN").exit_code == 0


# ------------------------------------------------------------------------------------------ admin policy


def test_admin_deny_beats_an_approval_and_shows_in_permissions(tmp_path: Path, cli, run_tark,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    make_guest(tmp_path / "src", BODY, name="denied", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    monkeypatch.setenv("TARK_POLICY", str(write_policy(tmp_path / "policy.toml", '[deny]\nenv = ["TOKEN"]\n')))
    assert call(run_tark, "denied", "env", "TOKEN")["ret"] == -2
    item = permissions(cli, "denied")["env:TOKEN"]
    assert (item["approved"], item["admin"], item["effective"]) == (True, "denied", False)
    assert "[deny] env entry 'TOKEN'" in item["why"]
    shown = cli("plugin", "permissions", "denied")
    assert "admin: denied" in shown.output


@pytest.mark.parametrize("text, mode, problem", [
    ("[deny\n", 0o600, "not valid TOML"),
    ("[deny]\nenv = []\n", 0o666, "writable by group or others"),
])
def test_a_broken_or_writable_policy_fails_closed(tmp_path: Path, cli, run_tark, monkeypatch: pytest.MonkeyPatch,
                                                  text: str, mode: int, problem: str) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    make_guest(tmp_path / "src", BODY, name="closed", capabilities='env = ["TOKEN"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    monkeypatch.setenv("TARK_POLICY", str(write_policy(tmp_path / "policy.toml", text, mode)))
    assert call(run_tark, "closed", "env", "TOKEN")["ret"] == -2
    shown = json.loads(cli("plugin", "permissions", "closed", "--json").stdout)
    assert problem in shown["problem"] and not shown["items"][0]["effective"]
    refused = cli("plugin", "add", "--yes", "--force", str(tmp_path / "src"))
    assert refused.exit_code == 1 and problem in refused.output


def test_admin_install_rules(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, plugins_root: Path) -> None:
    make_guest(tmp_path / "src", BODY, name="local")
    monkeypatch.setenv("TARK_POLICY", str(write_policy(tmp_path / "policy.toml", "[install]\nlocal = false\n")))
    refused = cli("plugin", "add", "--yes", str(tmp_path / "src"))
    assert refused.exit_code == 1 and "local directories" in refused.output
    assert not (plugins_root / "local").exists()


def test_admin_only_approvals(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARK_POLICY", str(write_policy(
        tmp_path / "policy.toml", '[install]\napprovals = "admin-only"\n[allow]\nenv = ["TOKEN"]\n')))
    make_guest(tmp_path / "src", BODY, name="managed", capabilities='env = ["TOKEN", "OTHER"]')
    assert cli("plugin", "add", str(tmp_path / "src")).exit_code == 0  # nothing for the user to decide
    items = permissions(cli, "managed")
    assert items["env:TOKEN"]["effective"] and not items["env:OTHER"]["effective"]
    refused = cli("plugin", "approve", "managed", "env:OTHER")
    assert refused.exit_code == 1 and "admin-only" in refused.output


def test_admin_limits_apply_per_plugin(tmp_path: Path, cli, run_tark, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARK_POLICY", str(write_policy(
        tmp_path / "policy.toml", "[limits]\nstorage_quota_bytes = 4096\n[limits.plugins.small]\n"
                                  "storage_quota_bytes = 16\n")))
    for name in ("small", "big"):
        make_guest(tmp_path / name, BODY, name=name, capabilities="storage = true")
        assert cli("plugin", "add", "--yes", str(tmp_path / name)).exit_code == 0
    assert call(run_tark, "big", "store", "x" * 100)["ret"] == 0
    assert call(run_tark, "small", "store", "x" * 100)["ret"] < 0  # 200 bytes over its 16-byte quota
    assert call(run_tark, "small", "store", "abc")["ret"] == 0


# ------------------------------------------------------------------------------------------ holes


def test_proc_self_environ_is_refused_to_a_hostile_manifest(tmp_path: Path, cli, run_tark,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Attacker: fs_read = ["/proc/self/environ", "/proc"] to read the supervisor's environment."""
    monkeypatch.setenv("SUPERVISOR_SECRET", "do-not-leak")
    make_guest(tmp_path / "src", BODY, name="snoop", capabilities='fs_read = ["/proc/self/environ", "/proc"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    for path in ("/proc/self/environ", f"/proc/{os.getpid()}/environ", "/proc/self/cmdline"):
        result = call(run_tark, "snoop", "read", path)
        assert result["ret"] == -2 and "do-not-leak" not in (result["output"] or ""), path
    denials = [r["reason"] for r in read_audit_trail(paths.data_root() / "audit.log") if r.get("decision") == "denied"]
    assert any("/proc is never readable" in reason for reason in denials)


def test_idna_lookalike_is_denied_before_any_connection(tmp_path: Path) -> None:
    """Attacker: pattern `fass.de`, request `https://faß.de/`, which httpx would send to xn--fa-hia.de."""
    from cap_support import make_host
    from worker import protocol

    with make_host(tmp_path, 'http = ["fass.de"]') as host:
        reply = host.handle(protocol.HttpGet(host_call_id=1, url="https://faß.de/", headers="[]"))
        assert reply.code == -2


def test_a_provider_reads_its_own_credentials_file_when_its_fs_read_names_it(
        tmp_path: Path, cli, run_tark, monkeypatch: pytest.MonkeyPatch) -> None:
    """The published ChatGPT provider declares fs_read = ["~/.config/tark/chatgpt_oauth.json"] and must be able to
    read it; the same manifest naming another plugin's file gets nothing."""
    home = tmp_path / "home"
    config = home / ".config" / "tark"
    config.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TARK_CONFIG_DIR", str(config))
    (config / "chatgpt_oauth.json").write_text('{"access_token":"mine"}')
    (config / "victim_oauth.json").write_text('{"access_token":"theirs"}')
    make_guest(tmp_path / "src", BODY, name="chatgpt",
               capabilities='fs_read = ["~/.config/tark/chatgpt_oauth.json", "~/.config/tark/victim_oauth.json"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    assert call(run_tark, "chatgpt", "read", "~/.config/tark/chatgpt_oauth.json") == {
        "ret": 23, "output": '{"access_token":"mine"}'}
    assert call(run_tark, "chatgpt", "read", "~/.config/tark/victim_oauth.json")["ret"] == -2
    assert call(run_tark, "chatgpt", "read", str(paths.data_root() / "approvals" / "chatgpt.json"))["ret"] == -2


def test_the_pool_compiles_only_the_approved_wasm(make_pool, tmp_path: Path) -> None:
    """A swap between the supervisor's pin check and the worker's start: the bytes read for the worker are the
    ones checked against the approved digest, so the swapped module never runs."""
    plugin = make_guest(tmp_path / "src", BODY, name="raced")
    pool = make_pool(pinned_wasm=lambda p: "0" * 64)
    outcome = pool.call(plugin, "env", [b"X"], 256)
    assert outcome.error_kind == "start_failed" and "not the approved module" in outcome.error_message
