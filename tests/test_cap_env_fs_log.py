"""tark:env, tark:fs read and tark:log / WASI output: codes of tark-core-abi.md §1.4 and the hardening."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from cap_support import make_host
from policy.limits import Limits
from supervisor.capabilities.audit import read_audit
from supervisor.host import PluginHost
from worker import protocol

# ------------------------------------------------------------------------------------------------- env


def env(host: PluginHost, name: str) -> protocol.HostReply:
    return host.handle(protocol.EnvGet(host_call_id=5, name=name))


def test_env_exact_and_prefix_entries_from_the_given_environment(tmp_path: Path) -> None:
    environ = {"API_KEY": "k-123", "MYAPP_REGION": "eu", "MYAPP_": "bare", "EMPTY": "", "SECRET": "no"}
    with make_host(tmp_path, 'env = ["API_KEY", "MYAPP_*", "EMPTY", "UNSET"]', environ=environ) as host:
        assert env(host, "API_KEY") == protocol.HostReply(host_call_id=5, code=5, data=b"k-123")
        assert env(host, "MYAPP_REGION").data == b"eu"
        assert env(host, "MYAPP_").data == b"bare"
        assert env(host, "EMPTY") == protocol.HostReply(host_call_id=5, code=0, data=b"")
        assert env(host, "UNSET") == protocol.HostReply(host_call_id=5, code=0, data=b"")
        assert env(host, "SECRET") == protocol.HostReply(host_call_id=5, code=-2, data=b"")
        assert env(host, "MYAPP").code == -2
        assert env(host, "api_key").code == -2
    assert [(r["capability"], r["target"]) for r in read_audit(tmp_path / "audit.log", decision="denied")] == [
        ("env", "SECRET"), ("env", "MYAPP"), ("env", "api_key")]


def test_env_value_longer_than_the_guest_buffer_is_refused(tmp_path: Path) -> None:
    environ = {"BIG": "v" * 257, "FITS": "v" * 256}
    with make_host(tmp_path, 'env = ["BIG", "FITS"]', environ=environ) as host:
        assert env(host, "BIG").code == -1
        assert env(host, "FITS").code == 256


def test_env_defaults_to_the_supervisor_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARK_TEST_TOKEN", "from-os")
    with make_host(tmp_path, 'env = ["TARK_TEST_TOKEN"]') as host:
        assert env(host, "TARK_TEST_TOKEN").data == b"from-os"


# -------------------------------------------------------------------------------------------------- fs


def read(host: PluginHost, path: str) -> protocol.HostReply:
    return host.handle(protocol.FsRead(host_call_id=6, path=path))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "conf" / "sub").mkdir(parents=True)
    (root / "conf" / "a.json").write_text('{"a": 1}')
    (root / "conf" / "b.txt").write_text("b ✓")
    (root / "conf" / "sub" / "c.json").write_text("c")
    (root / "conf" / "latin1.txt").write_bytes(b"caf\xe9")
    (root / "secret").mkdir()
    (root / "secret" / "key").write_text("TOP SECRET")
    return root


def test_fs_reads_files_under_a_directory_entry(tmp_path: Path, tree: Path) -> None:
    with make_host(tmp_path, f'fs_read = ["{tree}/conf"]') as host:
        assert read(host, f"{tree}/conf/a.json") == protocol.HostReply(host_call_id=6, code=8, data=b'{"a": 1}')
        assert read(host, f"{tree}/conf/sub/c.json").data == b"c"
        assert read(host, f"{tree}/conf/../conf/b.txt").data == "b ✓".encode()
        assert read(host, f"{tree}/secret/key").code == -2
        assert read(host, f"{tree}/conf/../secret/key").code == -2
        assert read(host, f"{tree}/confidential").code == -2  # component prefix, not string prefix
        assert read(host, "files/conf/a.json").code == -2  # relative: denied, never the supervisor's cwd
        assert read(host, f"{tree}/conf/missing").code == -3
        assert read(host, f"{tree}/conf/sub").code == -3  # a directory
        assert read(host, f"{tree}/conf/latin1.txt").code == -3  # not UTF-8
        assert read(host, "").code == -1
        assert read(host, f"{tree}/conf/a.json\x00").code == -1
    targets = [r["target"] for r in read_audit(tmp_path / "audit.log", decision="denied")]
    assert f"{tree}/secret/key" in targets and "files/conf/a.json" in targets


def test_fs_globs_match_one_component_or_any_depth(tmp_path: Path, tree: Path) -> None:
    with make_host(tmp_path, f'fs_read = ["{tree}/conf/*.json"]') as host:
        assert read(host, f"{tree}/conf/a.json").code == 8
        assert read(host, f"{tree}/conf/b.txt").code == -2
        assert read(host, f"{tree}/conf/sub/c.json").code == -2
    with make_host(tmp_path / "deep", f'fs_read = ["{tree}/**/c.json"]') as host:
        assert read(host, f"{tree}/conf/sub/c.json").data == b"c"
        assert read(host, f"{tree}/conf/a.json").code == -2


def test_fs_tilde_is_the_given_home(tmp_path: Path, tree: Path) -> None:
    with make_host(tmp_path, 'fs_read = ["~/conf/a.json"]', home=str(tree)) as host:
        assert read(host, "~/conf/a.json").data == b'{"a": 1}'
        assert read(host, f"{tree}/conf/a.json").code == 8
        assert read(host, "~/conf/b.txt").code == -2
        assert read(host, "~root/conf/a.json").code == -2  # ~user is not expanded: relative, denied


def test_fs_symlinks_cannot_leave_the_allowed_tree(tmp_path: Path, tree: Path) -> None:
    (tree / "conf" / "escape").symlink_to(tree / "secret" / "key")
    (tree / "conf" / "escape-dir").symlink_to(tree / "secret")
    (tree / "conf" / "inside").symlink_to(tree / "conf" / "a.json")
    (tree / "link-to-conf").symlink_to(tree / "conf")
    with make_host(tmp_path, f'fs_read = ["{tree}/conf"]') as host:
        assert read(host, f"{tree}/conf/escape").code == -2
        assert read(host, f"{tree}/conf/escape-dir/key").code == -2
        assert read(host, f"{tree}/conf/inside").code == 8  # resolves inside: fine
        assert read(host, f"{tree}/link-to-conf/a.json").code == 8  # canonical path is inside
    with make_host(tmp_path / "via-link", f'fs_read = ["{tree}/link-to-conf"]') as host:
        assert read(host, f"{tree}/conf/a.json").code == 8  # patterns are canonicalised too


def test_fs_size_cap_and_special_files(tmp_path: Path, tree: Path) -> None:
    (tree / "conf" / "big").write_text("x" * 101)
    (tree / "conf" / "exact").write_text("x" * 100)
    os.mkfifo(tree / "conf" / "fifo")
    with make_host(tmp_path, f'fs_read = ["{tree}/conf"]', limits=Limits(fs_max_file_bytes=100)) as host:
        assert read(host, f"{tree}/conf/big").code == -3
        assert read(host, f"{tree}/conf/exact").code == 100
        started = time.monotonic()
        assert read(host, f"{tree}/conf/fifo").code == -3  # not a regular file, and no blocking open
        assert time.monotonic() - started < 1


def test_fs_swapping_a_directory_for_a_symlink_never_leaks(tmp_path: Path, tree: Path) -> None:
    """The TOCTOU of tark (weakness 16): checked path != opened path. An attacker flips conf/d between a real
    directory and a symlink to secret/ while the plugin reads conf/d/key."""
    real = tree / "conf" / "d-real"
    real.mkdir()
    (real / "key").write_text("public")
    target = tree / "conf" / "d"
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            real.rename(target)
            time.sleep(0.0005)
            target.rename(real)
            target.symlink_to(tree / "secret")
            time.sleep(0.0005)
            target.unlink()

    flipper = threading.Thread(target=flip)
    seen = set()
    with make_host(tmp_path, f'fs_read = ["{tree}/conf"]') as host:
        flipper.start()
        try:
            for _ in range(400):
                reply = read(host, f"{tree}/conf/d/key")
                seen.add(reply.data if reply.code >= 0 else reply.code)
        finally:
            stop.set()
            flipper.join()
    assert b"TOP SECRET" not in seen
    assert seen <= {b"public", -2, -3}


# ------------------------------------------------------------------------------------------------- log


def test_log_levels_tag_and_escaping(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="tark.plugin.demo"), make_host(tmp_path) as host:
        for level in ("debug", "info", "warn", "error"):
            host.on_log(protocol.Log(level=level, message=f"{level} message"))
        host.on_log(protocol.Log(level="info", message="forged\n[plugin:other] owned\x1b[31m"))
    records = [r for r in caplog.records if r.name == "tark.plugin.demo"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "[plugin:demo] debug message"),
        (logging.INFO, "[plugin:demo] info message"),
        (logging.WARNING, "[plugin:demo] warn message"),
        (logging.ERROR, "[plugin:demo] error message"),
        (logging.INFO, "[plugin:demo] forged\\n[plugin:other] owned\\x1b[31m"),
    ]


def test_log_is_rate_limited_and_reports_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(log_lines_per_second=10, log_burst=3)
    with caplog.at_level(logging.INFO, logger="tark.plugin.demo"), make_host(tmp_path, limits=limits) as host:
        for i in range(10):
            host.on_log(protocol.Log(level="info", message=f"line {i}"))
        time.sleep(0.15)
        host.on_log(protocol.Log(level="info", message="after the pause"))
    messages = [r.getMessage() for r in caplog.records if r.name == "tark.plugin.demo"]
    assert messages == ["[plugin:demo] line 0", "[plugin:demo] line 1", "[plugin:demo] line 2",
                        "[plugin:demo] 7 messages dropped (rate limit)", "[plugin:demo] after the pause"]


def test_wasi_output_is_logged_line_by_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tark.plugin.demo"), make_host(tmp_path) as host:
        host.on_log(protocol.GuestOutput(stream="stdout", data=b"one\r\ntwo\npar"))
        host.on_log(protocol.GuestOutput(stream="stderr", data=b"oops \xff\n"))
        host.on_log(protocol.GuestOutput(stream="stdout", data=b"tial\nunterminated"))
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tark.plugin.demo"]
    assert records == [
        (logging.INFO, "[plugin:demo] one"),
        (logging.INFO, "[plugin:demo] two"),
        (logging.WARNING, "[plugin:demo] oops \ufffd"),
        (logging.INFO, "[plugin:demo] partial"),
        (logging.INFO, "[plugin:demo] unterminated"),  # flushed at close
    ]
