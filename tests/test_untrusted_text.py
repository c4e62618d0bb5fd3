"""Text from manifests and plugins reaches the terminal and the logs with its control characters escaped: a
hostile author cannot clear the screen, retitle the terminal, overprint a line or forge a log line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from policy.text import escape_control, escape_json_text
from supervisor.logging_setup import configure_logging
from wasm_fixtures import make_guest

HOSTILE = "Nice tool\\u001b[2J\\u001b]0;pwned\\u0007\\rOVERPRINT\\u009b31m\\u202eevil"
RAW_CONTROLS = ("\x1b", "\r", "\x07", "\x9b", "\u202e")


def test_escape_control_shows_every_control_character_and_keeps_the_rest() -> None:
    assert escape_control("a\x1b[2Jb\rc\nd\te\x00\x7f\x9b\u202e\u2028") == (
        "a\\x1b[2Jb\\rc\\nd\\te\\x00\\x7f\\x9b\\u202e\\u2028")
    assert escape_control("héllo ✓ 日本 🙂 a\\b") == "héllo ✓ 日本 🙂 a\\b"
    assert escape_control("one\ntwo\r", keep_newlines=True) == "one\ntwo\\r"
    assert json.loads(escape_json_text(json.dumps({"k": "\x9b\u202e"}, ensure_ascii=False))) == {"k": "\x9b\u202e"}


@pytest.fixture
def hostile_plugin(tmp_path: Path, make_plugin_dir, cli) -> str:
    manifest = (
        '[plugin]\nname = "hostile"\nversion = "0.1.0"\ntype = "tool"\n'
        f'description = "{HOSTILE}"\nauthor = "Mallory\\u001b[31m\\r"\n'
        '[capabilities]\nfs_read = ["/tmp/x\\r  Shell:   none"]\n'
    )
    make_plugin_dir(tmp_path / "src", manifest=manifest)
    added = cli("plugin", "add", "--yes", str(tmp_path / "src"))
    assert added.exit_code == 0, added.output
    return added.output


def test_list_and_info_show_manifest_text_escaped(hostile_plugin: str, cli) -> None:
    for args in (("plugin", "list"), ("plugin", "info", "hostile")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert not any(c in result.output for c in RAW_CONTROLS), repr(result.output)
        assert "\\x1b[2J" in result.output
    info = cli("plugin", "info", "hostile").output
    assert "Mallory\\x1b[31m\\r" in info
    assert "/tmp/x\\r  Shell:   none" in info
    assert not any(c in hostile_plugin for c in RAW_CONTROLS)  # `add` prints the capabilities too


def test_json_output_is_json_escaped_and_round_trips(hostile_plugin: str, cli) -> None:
    for args in (("plugin", "list", "--json"), ("plugin", "info", "hostile", "--json")):
        output = cli(*args).output
        assert not any(c in output for c in RAW_CONTROLS), repr(output)
        document = json.loads(output)
        described = document[0] if isinstance(document, list) else document
        assert described["description"].startswith("Nice tool\x1b[2J\x1b]0;pwned\x07\rOVERPRINT\x9b31m\u202e")


def test_errors_naming_manifest_text_are_escaped(tmp_path: Path, make_plugin_dir, cli) -> None:
    make_plugin_dir(tmp_path / "bad", manifest='[plugin]\nname = "x\\u001b[2J\\r"\nversion = "0.1.0"\ntype = "tool"\n')
    result = cli("plugin", "add", "--yes", str(tmp_path / "bad"))
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\r" not in result.output
    assert "x\\x1b[2J\\r" in result.output


ECHO = r"""
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (local.get $p) (local.get $l)) (local.get $l))
"""


def test_plugin_output_printed_by_call_is_escaped(tmp_path: Path, cli) -> None:
    make_guest(tmp_path / "src", ECHO, name="parrot")
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    plain = cli("plugin", "call", "parrot", "echo", "a\x1b[2Jb\rc\u202ed")
    assert plain.exit_code == 0, plain.output
    assert plain.output == "a\\x1b[2Jb\\rc\\u202ed\n"
    as_json = cli("plugin", "call", "parrot", "echo", "a\x1b[2J\u202e", "--json").output
    assert not any(c in as_json for c in RAW_CONTROLS)
    assert json.loads(as_json)["output"] == "a\x1b[2J\u202e"


def test_log_lines_are_escaped_whatever_logs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(False, "warn")
    try:
        logging.getLogger("tark.anything").warning("guest said %s", "oops\n2026-01-01 ERROR forged\x1b[2J")
    finally:
        configure_logging(False, None)
    line = stream.getvalue()
    assert line.count("\n") == 1 and "\x1b" not in line
    assert "guest said oops\\n2026-01-01 ERROR forged\\x1b[2J" in line


def test_a_key_name_with_a_carriage_return_cannot_overprint_the_capability_summary(
        tmp_path: Path, make_plugin_dir, cli) -> None:
    manifest = ('[plugin]\nname = "keys"\nversion = "0.1.0"\ntype = "tool"\n'
                '"x\\r  \\u2022 HTTP to: nothing\\n  \\u2022 Shell: none" = 1\n[capabilities]\nshell = true\n')
    make_plugin_dir(tmp_path / "src", manifest=manifest)
    for result in (cli("plugin", "add", "--yes", str(tmp_path / "src")), cli("plugin", "info", "keys")):
        assert result.exit_code == 0, result.output
        assert "\r" not in result.output
        assert not any(line.startswith("  • Shell: none") for line in result.output.splitlines())
        assert "unknown key 'plugin.x\\r  • HTTP to: nothing\\n  • Shell: none'" in result.output
