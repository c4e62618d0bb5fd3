"""`tark plugin ...`: the texts users see (tark-core-abi.md §6 plus our additions), exit codes and JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from supervisor.cli.main import TarkGroup
from supervisor.logging_setup import LogFilterError, configure_logging, parse_log_filter


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_list_with_nothing_installed(cli, plugins_root: Path) -> None:
    result = cli("plugin", "list")
    assert result.exit_code == 0
    assert lines(result.stdout) == [
        "=== Installed Plugins ===",
        "No plugins installed.",
        "Install a plugin with:",
        "  tark plugin add <git-url>",
        f"Plugins directory: {plugins_root}",
    ]
    assert json.loads(cli("plugin", "list", "--json").stdout) == []


def test_add_then_list(cli, make_plugin_dir, tmp_path: Path, plugins_root: Path) -> None:
    src = make_plugin_dir(tmp_path / "hello", description="A plugin with a very long description that goes on",
                          extra='min_tark_version = "0.5.0"\ncolour = "blue"',
                          capabilities='storage = true\nhttp = ["api.example.com"]\nenv = ["API_KEY"]\n'
                                       'fs_read = ["~/.config/hello"]')
    result = cli("plugin", "add", "--yes", str(src))
    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [
        "=== Installing Plugin ===",
        f"Source: {src} (local)",
        "Found plugin: hello v0.1.0",
        "Type: tool",
        "Requires tark: >= 0.5.0",
        "Capabilities:",
        "  • Storage access",
        "  • HTTP to: api.example.com",
        "  • Env vars: API_KEY",
        "  • Read files: ~/.config/hello",
        "Installing...",
        "✅ Successfully installed plugin: hello",
        "The plugin is ready to use.",
    ]
    assert lines(result.stderr) == [
        f"Warning: {src}/plugin.toml: unknown key 'plugin.colour' is ignored (check for a typo)"]

    make_plugin_dir(tmp_path / "abc", name="abc", type="provider", description="short")
    assert cli("plugin", "add", "--yes", str(tmp_path / "abc")).exit_code == 0
    assert cli("plugin", "disable", "abc").exit_code == 0
    listed = lines(cli("plugin", "list").stdout)
    assert listed[0] == "=== Installed Plugins ==="
    assert [c.strip() for c in listed[2].strip("│").split("│")] == ["ID", "Version", "Type", "Status", "Description"]
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in listed[4:6]]
    assert rows == [["abc", "0.1.0", "provider", "✗ disabled", "short"],
                    ["hello", "0.1.0", "tool", "✓ enabled", "A plugin with a very long description..."]]
    assert len(rows[1][4]) == 40
    assert listed[-1] == f"Plugins directory: {plugins_root}"

    doc = json.loads(cli("plugin", "list", "--json").stdout)
    assert [(p["id"], p["status"], p["enabled"]) for p in doc] == [("abc", "disabled", False),
                                                                     ("hello", "enabled", True)]
    assert doc[1]["source"]["url"] == str(src) and doc[1]["source"]["is_git"] is False


@pytest.mark.parametrize("kwargs, message", [
    ({"wasm_bytes": None}, "Error: Failed to load plugin: file not found: {src}/plugin.wasm"),
    ({"manifest": "[plugin]\nname = 'x'\nversion = "}, "Error: {src}/plugin.toml: Failed to parse plugin.toml"),
    ({"version": "v1.0.0"}, "Plugin version must be valid semver: v1.0.0"),
    ({"type": "widget"}, "Plugin type must be one of"),
    ({"name": "Hello_World"}, "Plugin name must be lowercase"),
    ({"extra": 'min_tark_version = "99.0.0"'}, "Plugin requires tark >= 99.0.0, but current version is"),
    ({"wasm_bytes": b"\x00asm\x01\x00\x00\x00\x01\xff"}, "Error: WASM validation failed: "),
])
def test_add_failures_exit_1_without_traceback(cli, make_plugin_dir, tmp_path, kwargs, message) -> None:
    src = make_plugin_dir(tmp_path / "src", **kwargs)
    result = cli("plugin", "add", "--yes", str(src))
    assert result.exit_code == 1
    assert message.format(src=src) in result.stderr
    assert "Traceback" not in result.output
    assert "✅" not in result.stdout
    assert json.loads(cli("plugin", "list", "--json").stdout) == []


def test_add_twice_needs_force(cli, make_plugin_dir, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "src")
    assert cli("plugin", "add", "--yes", str(src)).exit_code == 0
    again = cli("plugin", "add", "--yes", str(src))
    assert again.exit_code == 1
    assert lines(again.stderr) == [
        "Error: Plugin 'hello' is already installed",
        "Use 'tark plugin update hello' to update it, or 'tark plugin add --force' to replace it."]
    assert cli("plugin", "add", "--yes", "--force", str(src)).exit_code == 0


def test_add_missing_path_and_usage_errors(cli, tmp_path) -> None:
    missing = cli("plugin", "add", "--yes", str(tmp_path / "nope"))
    assert missing.exit_code == 1
    assert missing.stderr.startswith(f"Error: Path does not exist: {tmp_path / 'nope'}")
    assert cli("plugin", "add").exit_code == 2
    assert cli("plugin", "add", "--yes", "x", "--bogus").exit_code == 2
    assert cli("plugin", "nope").exit_code == 2


def test_add_from_git_with_ref(cli, make_plugin_dir, make_git_repo, tmp_path) -> None:
    repo = make_git_repo(make_plugin_dir(tmp_path / "repo"))
    repo.tag("v0.1.0")
    result = cli("plugin", "add", "--yes", f"{repo.url}#v0.1.0")
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)
    assert out[:4] == ["=== Installing Plugin ===", f"Repository: {repo.url}", "Branch:     v0.1.0",
                       "Cloning repository..."]
    assert f"Commit:     {repo.head()}" in out

    conflicting = cli("plugin", "add", "--yes", f"{repo.url}#v0.1.0", "-b", "main", "--force")
    assert conflicting.exit_code == 1 and "Conflicting git refs" in conflicting.stderr
    missing = cli("plugin", "add", "--yes", repo.url, "--branch", "v9.9.9", "--force")
    assert missing.exit_code == 1
    assert lines(missing.stderr) == [f"Error: Git ref 'v9.9.9' not found in {repo.url}"]
    nosub = cli("plugin", "add", "--yes", repo.url, "-p", "plugins/none", "--force")
    assert lines(nosub.stderr) == ["Error: Subdirectory 'plugins/none' not found in repository"]


def test_info_text_and_json(cli, make_plugin_dir, make_git_repo, tmp_path, plugins_root) -> None:
    make_plugin_dir(tmp_path / "repo" / "hello", description="Greets",
                    extra='author = "Ann"\nlicense = "MIT"\nmin_tark_version = "0.1.0"',
                    capabilities='http = ["api.example.com", "*.example.org"]\nshell = true')
    repo = make_git_repo(tmp_path / "repo")
    assert cli("plugin", "add", "--yes", repo.url, "-p", "hello", "-b", "main").exit_code == 0
    installed = plugins_root / "hello"
    record = json.loads((installed / ".install.json").read_text())

    result = cli("plugin", "info", "hello")
    assert result.exit_code == 0, result.output
    shown = lines(result.stdout)
    limits_at = shown.index("Limits (docs/limits.md):")
    assert any(line.split() == ["call_timeout_s:", "120", "s", "(default)"] for line in shown[limits_at:])
    assert shown[:limits_at] == [
        "=== Plugin: hello ===",
        "Name:    hello",
        "Version:  0.1.0",
        "Type:    tool",
        "Status:  enabled",
        "Description: Greets",
        "Author:  Ann",
        "License: MIT",
        "Min tark version: 0.1.0",
        "Capabilities:",
        "  Storage: ✗",
        "  HTTP:    api.example.com, *.example.org",
        "  Env:     ✗",
        "  FS read: ✗",
        "  Shell:   ⚠️ yes (dangerous!)",
        "Paths:",
        f"  Install: {installed}",
        f"  WASM:    {installed / 'plugin.wasm'}",
        f"  Data:    {installed / 'data'}",
        "Source:",
        f"  Repository: {repo.url}",
        "  Ref:        main",
        "  Path:       hello",
        f"  Commit:     {repo.head()}",
        f"  Installed:  {record['installed_at']}",
        "Integrity:",
        f"  WASM sha256:     {record['wasm_sha256']}",
        f"  Manifest sha256: {record['manifest_sha256']}",
    ]
    assert "capabilities.shell = true" in result.stderr

    doc = json.loads(cli("plugin", "info", "hello", "--json").stdout)
    assert doc["id"] == "hello" and doc["capabilities"]["http"] == ["api.example.com", "*.example.org"]
    assert doc["capabilities"]["fs_read"] == [] and doc["min_tark_version"] == "0.1.0"
    assert doc["source"]["commit"] == repo.head() and doc["wasm_modified"] is False
    assert doc["paths"]["wasm"] == str(installed / "plugin.wasm")

    (installed / "plugin.wasm").write_bytes((installed / "plugin.wasm").read_bytes() + b"\x00")
    assert "changed since install" in cli("plugin", "info", "hello").stdout


@pytest.mark.parametrize("command", ["info", "enable", "disable", "remove", "update"])
def test_unknown_plugin(cli, command) -> None:
    result = cli("plugin", command, "ghost")
    assert result.exit_code == 1
    assert lines(result.stderr) == ["Error: Plugin 'ghost' not found"]


def test_enable_disable_remove(cli, make_plugin_dir, tmp_path, plugins_root) -> None:
    cli("plugin", "add", "--yes", str(make_plugin_dir(tmp_path / "src")))
    assert lines(cli("plugin", "disable", "hello").stdout) == ["✅ Disabled plugin: hello"]
    assert (plugins_root / "hello" / ".disabled").exists()
    assert lines(cli("plugin", "enable", "hello").stdout) == ["✅ Enabled plugin: hello"]
    assert not (plugins_root / "hello" / ".disabled").exists()
    assert lines(cli("plugin", "remove", "hello").stdout) == [
        "=== Uninstalling Plugin ===", "✅ Successfully uninstalled plugin: hello"]
    assert not (plugins_root / "hello").exists()


def test_update_one_and_all(cli, make_plugin_dir, tmp_path, plugins_root) -> None:
    src = make_plugin_dir(tmp_path / "src", version="1.0.0")
    cli("plugin", "add", "--yes", str(src))
    cli("plugin", "disable", "hello")
    (plugins_root / "hello" / "data").mkdir()
    (plugins_root / "hello" / "data" / "storage.json").write_text('{"a": "b"}')
    make_plugin_dir(src, version="1.2.0")

    result = cli("plugin", "update", "hello")
    assert lines(result.stdout) == ["=== Updating Plugin ===", f"Updating hello from {src}",
                                    "✅ Updated plugin: hello"]
    info = json.loads(cli("plugin", "info", "hello", "--json").stdout)
    assert (info["version"], info["enabled"]) == ("1.2.0", False)
    assert (plugins_root / "hello" / "data" / "storage.json").read_text() == '{"a": "b"}'

    cli("plugin", "add", "--yes", str(make_plugin_dir(tmp_path / "b", name="broken-later")))
    cli("plugin", "add", "--yes", str(make_plugin_dir(tmp_path / "c", name="copied")))
    (plugins_root / "copied" / ".install.json").unlink()
    (tmp_path / "b" / "plugin.toml").write_text("not = [valid")
    result = cli("plugin", "update", "--all")
    assert result.exit_code == 1
    assert lines(result.stdout)[0] == "=== Updating Plugins ==="
    assert "✅ Updated hello" in lines(result.stdout)
    assert lines(result.stdout)[-1] == "Done. updated=1, skipped=1, failed=1"
    assert "Error: failed to update broken-later:" in result.stderr

    neither = cli("plugin", "update")  # a usage error (exit 2), with tark's text
    assert neither.exit_code == 2 and neither.stderr.strip().endswith("Error: Specify a plugin ID or use --all")
    assert cli("plugin", "update", "hello", "--all").exit_code == 2


def test_broken_plugin_dirs_are_warned_about_not_hidden(cli, make_plugin_dir, plugins_root) -> None:
    make_plugin_dir(plugins_root / "bad", name="bad", version="1.0")
    result = cli("plugin", "list")
    assert result.exit_code == 0 and "No plugins installed." in result.stdout
    assert result.stderr.startswith(f"Warning: {plugins_root / 'bad'} is not loaded: ")
    assert "Plugin version must be valid semver: 1.0" in result.stderr


def test_unexpected_errors_are_reported_without_traceback_unless_verbose() -> None:
    group = TarkGroup("t")

    @group.command("boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    quiet = CliRunner().invoke(group, ["boom"])
    assert quiet.exit_code == 1
    assert quiet.stderr.startswith("Error: internal error: RuntimeError: kaput (run with -v")
    assert "Traceback" not in quiet.stderr

    @click.group(cls=TarkGroup)
    @click.option("-v", "verbose", is_flag=True)
    @click.pass_context
    def root(ctx: click.Context, verbose: bool) -> None:
        from supervisor.cli.main import CliState
        ctx.obj = CliState(verbose=verbose)

    root.add_command(boom)
    loud = CliRunner().invoke(root, ["-v", "boom"])
    assert loud.exit_code == 1 and "Traceback" in loud.stderr and "Error: internal error" in loud.stderr


def test_real_process_round_trip(run_tark, make_plugin_dir, tmp_path, plugins_root) -> None:
    src = make_plugin_dir(tmp_path / "src")
    added = run_tark("plugin", "add", "--yes", str(src))
    assert added.returncode == 0, added.stderr
    assert "✅ Successfully installed plugin: hello" in added.stdout
    listed = run_tark("plugin", "list", "--json")
    assert [p["id"] for p in json.loads(listed.stdout)] == ["hello"]
    missing = run_tark("plugin", "info", "ghost")
    assert (missing.returncode, missing.stderr) == (1, "Error: Plugin 'ghost' not found\n")


def test_tark_log_filter_via_process(run_tark, monkeypatch) -> None:
    monkeypatch.setenv("TARK_LOG", "supervisor.registry=loud")
    result = run_tark("plugin", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Invalid TARK_LOG filter 'supervisor.registry=loud': unknown level 'loud'")
    monkeypatch.setenv("TARK_LOG", "debug")
    assert run_tark("plugin", "list").returncode == 0


# ------------------------------------------------------------------ logging filter


def test_log_filter_syntax() -> None:
    assert parse_log_filter("warn").default == logging.WARNING
    parsed = parse_log_filter("supervisor.registry=debug,info")
    assert parsed.default == logging.INFO and parsed.targets == (("supervisor.registry", logging.DEBUG),)
    assert parse_log_filter("tark::plugin::my-plugin=error").targets == (("tark.plugin.my-plugin", logging.ERROR),)
    for bad in ("loud", "a=b", "=debug", "bad target=info"):
        with pytest.raises(LogFilterError, match="Invalid TARK_LOG filter"):
            parse_log_filter(bad)


def test_configure_logging_sets_levels_and_can_be_reapplied() -> None:
    try:
        configure_logging(False, "tark.plugin.my-plugin=info,error")
        assert logging.getLogger().level == logging.ERROR
        assert logging.getLogger("tark.plugin.my-plugin").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("tark.plugin.other").getEffectiveLevel() == logging.ERROR
        configure_logging(True, None)
        assert logging.getLogger().level == logging.DEBUG
        assert logging.getLogger("tark.plugin.my-plugin").level == logging.NOTSET
        assert sum(h.get_name() == "tark-cli" for h in logging.getLogger().handlers) == 1
    finally:
        configure_logging(False, None)
