"""Install never trusts shipped state: a source's data/ is not opened as a database, and an imported tark
storage.json goes through the same limits as storage.set. Written from the side of a hostile plugin author."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from policy.limits import Limits
from supervisor.host import PluginHost
from supervisor.registry import Registry
from supervisor.sources import LocalSource
from worker import protocol

STORAGE = "storage = true"


def crafted_database(path: Path) -> None:
    """A storage.sqlite3 whose trigger makes every set write a megabyte the quota never sees."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE ballast (blob BLOB);
            CREATE TRIGGER bloat AFTER INSERT ON kv BEGIN
              INSERT INTO ballast VALUES (zeroblob(1048576));
            END;
            INSERT INTO meta VALUES ('imported_storage_json', '{}');
        """)
    conn.close()


def put(host: PluginHost, key: str, value: str) -> int:
    return host.handle(protocol.StorageSet(host_call_id=1, key=key, value=value)).code


def get(host: PluginHost, key: str) -> protocol.HostReply:
    return host.handle(protocol.StorageGet(host_call_id=2, key=key))


def test_a_shipped_database_is_not_installed(tmp_path: Path, make_plugin_dir, plugins_root: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    source = make_plugin_dir(tmp_path / "src", "hostile", capabilities=STORAGE,
                             files={"data/storage.json": '{"greeting": "hi"}', "data/notes/x.txt": "x"})
    crafted_database(source / "data" / "storage.sqlite3")
    with caplog.at_level(logging.WARNING):
        outcome = Registry(plugins_root).install(LocalSource(source, str(source)))
    installed = plugins_root / "hostile" / "data"
    assert sorted(p.name for p in installed.iterdir()) == ["storage.json"]
    assert "ignoring storage.sqlite3 shipped" in caplog.text
    with PluginHost(Registry(plugins_root).get("hostile"), audit_path=tmp_path / "audit.log") as host:
        for n in range(4):
            assert put(host, f"k{n}", "v") == 0
        assert get(host, "greeting").data == b"hi"  # storage.json itself is still imported
    with sqlite3.connect(installed / "storage.sqlite3") as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert names == {"kv", "meta"}
    assert sum(f.stat().st_size for f in installed.iterdir()) < 512 * 1024
    assert outcome is not None


def test_a_foreign_database_already_in_place_is_refused_and_left_untouched(
        tmp_path: Path, make_plugin_dir, plugins_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A plugin directory copied in by hand (no `plugin add`) with a crafted database: the trigger never runs."""
    directory = make_plugin_dir(plugins_root / "dropped", "dropped", capabilities=STORAGE)
    db = directory / "data" / "storage.sqlite3"
    crafted_database(db)
    before = db.read_bytes()
    with caplog.at_level(logging.ERROR), PluginHost(Registry(plugins_root).get("dropped"),
                                                     audit_path=tmp_path / "audit.log") as host:
        for n in range(4):
            assert put(host, f"k{n}", "v") == -1
    assert "trigger 'bloat'" in caplog.text and "which tark did not create" in caplog.text
    assert "Move the file away" in caplog.text
    assert db.read_bytes() == before
    assert not db.with_name("storage.sqlite3-wal").exists() or db.with_name("storage.sqlite3-wal").stat().st_size == 0


def _plugin_with_storage_json(make_plugin_dir, directory: Path, content: bytes) -> PluginHost:
    make_plugin_dir(directory, "demo", capabilities=STORAGE)
    (directory / "data").mkdir()
    (directory / "data" / "storage.json").write_bytes(content)
    return directory


def test_an_oversized_storage_json_is_refused_by_the_quota(tmp_path: Path, make_plugin_dir,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(storage_quota_bytes=64 * 1024)
    big = json.dumps({f"k{n}": "x" * 1000 for n in range(100)}).encode()  # ~100 KB, under 2x quota: parsed
    directory = _plugin_with_storage_json(make_plugin_dir, tmp_path / "demo", big)
    from supervisor.plugin import load_plugin_dir

    with caplog.at_level(logging.ERROR), PluginHost(load_plugin_dir(directory), limits,
                                                     audit_path=tmp_path / "audit.log") as host:
        assert get(host, "k1").code == 0  # nothing imported
        assert put(host, "fresh", "1") == 0
        assert host.storage._store.used_bytes() == 6
    assert "over the storage quota of 65536 bytes" in caplog.text
    assert "the file is kept" in caplog.text
    assert (directory / "data" / "storage.json").read_bytes() == big


def test_a_huge_storage_json_is_not_even_read(tmp_path: Path, make_plugin_dir,
                                              caplog: pytest.LogCaptureFixture) -> None:
    directory = _plugin_with_storage_json(make_plugin_dir, tmp_path / "demo", b"")
    with open(directory / "data" / "storage.json", "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # 50 MiB (sparse) against the default 10 MiB quota
    from supervisor.plugin import load_plugin_dir

    with caplog.at_level(logging.ERROR), PluginHost(load_plugin_dir(directory), audit_path=tmp_path / "a.log") as host:
        assert put(host, "k", "v") == 0
        assert host.storage._store.used_bytes() == 2
    assert "it is 52428800 bytes, more than the storage quota can hold" in caplog.text


def test_storage_json_values_and_keys_obey_the_set_limits(tmp_path: Path, make_plugin_dir,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from supervisor.plugin import load_plugin_dir

    limits = Limits(storage_max_value_bytes=100, storage_max_key_bytes=10)
    for content, message in ((json.dumps({"k": "x" * 101}), "over the 100-byte value limit"),
                             (json.dumps({"k" * 11: "x"}), "exceeds the 10-byte key limit")):
        directory = _plugin_with_storage_json(make_plugin_dir, tmp_path / f"d{len(caplog.records)}{len(content)}", content.encode())
        caplog.clear()
        with caplog.at_level(logging.ERROR), PluginHost(load_plugin_dir(directory), limits,
                                                         audit_path=tmp_path / "a.log") as host:
            assert put(host, "ok", "1") == 0
            assert host.storage._store.used_bytes() == 3
        assert message in caplog.text


def test_a_symlinked_storage_json_is_not_followed(tmp_path: Path, make_plugin_dir,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from supervisor.plugin import load_plugin_dir

    secret = tmp_path / "id_rsa.json"
    secret.write_text('{"private": "key material"}')
    directory = make_plugin_dir(tmp_path / "demo", "demo", capabilities=STORAGE)
    (directory / "data").mkdir()
    os.symlink(secret, directory / "data" / "storage.json")
    with caplog.at_level(logging.ERROR), PluginHost(load_plugin_dir(directory), audit_path=tmp_path / "a.log") as host:
        assert get(host, "private").code == 0
    assert "cannot import" in caplog.text
