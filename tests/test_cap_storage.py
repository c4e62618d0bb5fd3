"""tark:storage: per-plugin SQLite (WAL), tark's return codes, limits, storage.json import, no lost updates."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import sqlite3
from pathlib import Path

from cap_support import make_host, make_plugin
from policy.limits import Limits
from supervisor.capabilities.audit import read_audit
from supervisor.host import PluginHost
from worker import protocol

STORAGE = "storage = true"


def get(host: PluginHost, key: str) -> protocol.HostReply:
    return host.handle(protocol.StorageGet(host_call_id=1, key=key))


def put(host: PluginHost, key: str, value: str) -> int:
    return host.handle(protocol.StorageSet(host_call_id=2, key=key, value=value)).code


def delete(host: PluginHost, key: str) -> int:
    return host.handle(protocol.StorageDelete(host_call_id=3, key=key)).code


def test_set_get_delete_follow_tark_codes(tmp_path: Path) -> None:
    with make_host(tmp_path, STORAGE) as host:
        assert put(host, "token", "s3cr3t ✓") == 0
        reply = get(host, "token")
        assert reply.host_call_id == 1
        assert reply.data == "s3cr3t ✓".encode()
        assert reply.code == len(reply.data)
        assert get(host, "missing") == protocol.HostReply(host_call_id=1, code=0, data=b"")
        assert put(host, "empty", "") == 0
        assert get(host, "empty").code == 0
        assert delete(host, "token") == 0
        assert delete(host, "token") == 0  # absent: still 0
        assert get(host, "token").code == 0


def test_database_is_private_wal_and_survives_a_new_host(tmp_path: Path) -> None:
    with make_host(tmp_path, STORAGE) as host:
        put(host, "k", "v")
        db = host.plugin.data_dir / "storage.sqlite3"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
        wal = db.with_name(db.name + "-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with PluginHost(host.plugin, audit_path=tmp_path / "audit.log") as again:
        assert get(again, "k").data == b"v"


def test_storage_not_declared_is_refused_and_audited(tmp_path: Path) -> None:
    with make_host(tmp_path, "") as host:
        assert put(host, "k", "v") == -1
        assert get(host, "k").code == -1
        assert delete(host, "k") == -1
        assert not (host.plugin.data_dir / "storage.sqlite3").exists()
    records = read_audit(tmp_path / "audit.log", decision="denied")
    assert [(r["plugin"], r["capability"], r["target"]) for r in records] == [
        ("demo", "storage", "set k"), ("demo", "storage", "get k"), ("demo", "storage", "delete k")]
    assert all("storage = true" in r["reason"] for r in records)


def test_key_value_and_quota_limits(tmp_path: Path, caplog) -> None:
    limits = Limits(storage_max_key_bytes=8, storage_max_value_bytes=20, storage_quota_bytes=40,
                    max_result_bytes=16)
    with make_host(tmp_path, STORAGE, limits=limits) as host:
        with caplog.at_level(logging.WARNING, logger="tark.plugin.demo"):
            assert put(host, "k" * 9, "v") == -1
            assert put(host, "ü" * 5, "v") == -1  # 10 bytes in UTF-8
            assert put(host, "k", "v" * 21) == -1
            assert put(host, "a", "x" * 19) == 0  # 20 bytes used
            assert put(host, "b", "x" * 19) == 0  # 40 bytes used
            assert put(host, "c", "x") == -1  # over the quota
            assert put(host, "a", "y" * 10) == 0  # replacing shrinks
            assert put(host, "c", "x" * 8) == 0  # 11 + 20 + 9 = 40
            assert get(host, "b").code == -1  # 19 bytes > 16-byte result limit: refused, not written
        assert "key longer than 8 bytes" in caplog.text
        assert "value longer than 20 bytes" in caplog.text
        assert "quota of 40 bytes exceeded" in caplog.text
        assert "exceeds the 16-byte result limit" in caplog.text
        assert host.storage._store.used_bytes() == 40


def test_tark_storage_json_is_imported_once(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "demo", STORAGE)
    plugin.data_dir.mkdir()
    (plugin.data_dir / "storage.json").write_text(json.dumps({"access_token": "abc", "n": "1"}, indent=2))
    with PluginHost(plugin, audit_path=tmp_path / "audit.log") as host:
        assert get(host, "access_token").data == b"abc"
        assert delete(host, "access_token") == 0
    with PluginHost(plugin, audit_path=tmp_path / "audit.log") as host:
        assert get(host, "access_token").code == 0  # not re-imported over the deletion
        assert get(host, "n").data == b"1"
    with sqlite3.connect(plugin.data_dir / "storage.sqlite3") as conn:
        meta = json.loads(conn.execute("SELECT value FROM meta WHERE name = 'imported_storage_json'").fetchone()[0])
    assert meta["keys"] == 2


def test_corrupt_storage_json_is_kept_reported_and_imported_once_fixed(tmp_path: Path, caplog) -> None:
    plugin = make_plugin(tmp_path / "demo", STORAGE)
    plugin.data_dir.mkdir()
    tark_file = plugin.data_dir / "storage.json"
    for corrupt in (b'{"token": "abc"', b'{"n": 1}', b'["a"]', b"[" * 100_000, b'{"token": "\xff"}'):
        tark_file.write_bytes(corrupt)
        caplog.clear()
        with caplog.at_level(logging.ERROR), PluginHost(plugin, audit_path=tmp_path / "audit.log") as host:
            assert get(host, "token").code == 0
            assert put(host, "fresh", "1") == 0
        assert "not a JSON object of strings" in caplog.text
        assert tark_file.read_bytes() == corrupt
    tark_file.write_text('{"token": "abc", "fresh": "from-file"}')
    with PluginHost(plugin, audit_path=tmp_path / "audit.log") as host:
        assert get(host, "token").data == b"abc"
        assert get(host, "fresh").data == b"1"  # the database's newer value wins


def _increment_many(plugin_dir: str, audit: str, times: int) -> None:
    from supervisor.plugin import InstalledPlugin
    from policy.manifest import parse_manifest

    manifest = parse_manifest(Path(plugin_dir, "plugin.toml").read_text()).manifest
    with PluginHost(InstalledPlugin(directory=Path(plugin_dir), manifest=manifest), audit_path=Path(audit)) as host:
        for _ in range(times):
            # tark rewrote its whole snapshot on every set, losing the other process's keys
            put(host, f"{os.getpid()}-{_}", "x")


def test_two_processes_share_the_store_without_lost_updates(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "demo", STORAGE)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_increment_many, args=(str(plugin.directory), str(tmp_path / "a.log"), 100))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    with sqlite3.connect(plugin.data_dir / "storage.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 200


def test_concurrent_hosts_in_one_process_interleave_safely(tmp_path: Path) -> None:
    import threading

    plugin = make_plugin(tmp_path / "demo", STORAGE)
    hosts = [PluginHost(plugin, audit_path=tmp_path / "audit.log") for _ in range(2)]
    try:
        def work(host: PluginHost, tag: str) -> None:
            for i in range(100):
                assert put(host, f"{tag}{i}", tag) == 0

        threads = [threading.Thread(target=work, args=(h, t)) for h, t in zip(hosts, "ab")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(get(hosts[0], f"b{i}").data == b"b" for i in range(100))
        assert all(get(hosts[1], f"a{i}").data == b"a" for i in range(100))
    finally:
        for host in hosts:
            host.close()


def test_calls_after_close_fail_cleanly(tmp_path: Path) -> None:
    host = make_host(tmp_path, STORAGE)
    host.close()
    assert put(host, "k", "v") == -1
    host.close()
