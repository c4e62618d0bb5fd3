"""tark:storage — a per-plugin key/value store in SQLite (WAL) at `<plugin dir>/data/storage.sqlite3`.

Fixes tark's weaknesses 9-12: every operation is one transaction on a shared database (no lost updates
between instances or processes), files are created 0600 in a 0700 directory before SQLite opens them, the
`storage` capability is enforced, keys, values and the total are bounded, and an existing tark
`data/storage.json` is imported once (a corrupt one is reported and kept, not silently dropped).

Shipped state is never trusted (docs/secrets-and-audit.md): an install keeps nothing of a source's `data/` but a
`storage.json` (`strip_shipped_data`); the import goes through the same key, value and quota limits as
`storage.set`; and a database holding anything the supervisor did not create (a trigger, a view, another
table) is refused instead of used.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import attrs

from policy.grants import EffectiveGrants, StorageAccess
from policy.limits import Limits
from supervisor.capabilities.audit import AuditLog
from supervisor.capabilities.outcome import FAILED, Outcome

DB_FILE = "storage.sqlite3"
TARK_JSON_FILE = "storage.json"
_IMPORTED = "imported_storage_json"
# The bytes the store holds (UTF-8 key + value of every row), kept by each write in its own transaction so a
# quota check reads one row instead of summing the table. Absent in a database from before it
# existed: counted once when opened (docs/architecture.md).
_USED = "used_bytes"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class StorageLimitError(Exception):
    """A write the limits refuse; the message says which limit."""


class ForeignDatabaseError(sqlite3.DatabaseError):
    """The database file holds schema objects the supervisor did not create."""


_OUR_SCHEMA = {("table", "kv"), ("table", "meta")}


@attrs.frozen
class StoreLimits:
    quota_bytes: int
    max_key_bytes: int
    max_value_bytes: int


def strip_shipped_data(data_dir: Path, log: logging.Logger) -> None:
    """Remove everything a plugin source ships in `data/` except a regular `storage.json` (imported later under
    the storage limits). Called on the staged copy at install, before anything opens it."""
    if data_dir.is_symlink() or (data_dir.exists() and not data_dir.is_dir()):
        data_dir.unlink()
        return
    if not data_dir.is_dir():
        return
    for entry in data_dir.iterdir():
        if entry.name == TARK_JSON_FILE and entry.is_file() and not entry.is_symlink():
            continue
        log.warning("ignoring %s shipped in the plugin's data/: only storage.json is imported", entry.name)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@attrs.frozen
class StorageConfig:
    grants: Callable[[], EffectiveGrants]  # the plugin's current effective grants (policy/grants.py)
    data_dir: Path
    quota_bytes: int
    max_key_bytes: int
    max_value_bytes: int
    max_result_bytes: int
    busy_timeout_s: float

    @classmethod
    def derive(cls, grants: Callable[[], EffectiveGrants], data_dir: Path, limits: Limits) -> "StorageConfig":
        return cls(
            grants=grants,
            data_dir=data_dir,
            quota_bytes=limits.storage_quota_bytes,
            max_key_bytes=limits.storage_max_key_bytes,
            max_value_bytes=limits.storage_max_value_bytes,
            max_result_bytes=limits.max_result_bytes,
            busy_timeout_s=limits.storage_busy_timeout_s,
        )

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE


class KeyValueStore:
    """The SQLite store itself (thread-safe; one connection guarded by a lock)."""

    def __init__(self, db_path: Path, busy_timeout_s: float, log: logging.Logger) -> None:
        self._lock = threading.Lock()
        self._log = log
        self._busy_timeout_s = busy_timeout_s
        with _setup_lock(db_path.parent):
            _create_private(db_path)
            self._conn = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
            try:
                self._conn.execute("PRAGMA trusted_schema=OFF")
                _check_schema(self._conn, db_path)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._count_usage_once()
            except sqlite3.Error:
                self._conn.close()
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def keys(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._conn.execute("SELECT key FROM kv ORDER BY key")]

    def set(self, key: str, value: str, quota_bytes: int, wait_s: float | None = None) -> None:
        """`wait_s`: how long to wait for another writer at most, when less than the busy timeout (what is left
        of the call's deadline, docs/limits.md)."""
        with self._lock, self._busy_wait(wait_s), self._write():
            old = self._conn.execute(
                "SELECT length(CAST(value AS BLOB)) FROM kv WHERE key = ?", (key,)).fetchone()
            used = self._used_bytes()
            key_bytes = len(key.encode())
            after = used - (key_bytes + old[0] if old else 0) + key_bytes + len(value.encode())
            if after > quota_bytes and after > used:
                raise StorageLimitError(f"storage quota of {quota_bytes} bytes exceeded ({after} bytes needed)")
            self._conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
            self._set_used(after)

    def delete(self, key: str, wait_s: float | None = None) -> None:
        with self._lock, self._busy_wait(wait_s), self._write():
            gone = self._conn.execute("DELETE FROM kv WHERE key = ? "
                                      "RETURNING length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))",
                                      (key,)).fetchone()
            if gone is not None:
                self._set_used(self._used_bytes() - gone[0])

    def used_bytes(self) -> int:
        with self._lock:
            return self._used_bytes()

    def import_tark_json(self, path: Path, limits: StoreLimits) -> None:
        """Import tark's storage.json once, under the same limits as storage.set. A corrupt or oversized file
        is logged and left in place, and not marked imported, so a fixed file is imported next time."""
        with self._lock, self._write():
            if self._conn.execute("SELECT 1 FROM meta WHERE name = ?", (_IMPORTED,)).fetchone():
                return
            keep = "starting with empty storage; the file is kept: fix or remove it and it will be imported next time"
            try:
                raw = _read_bounded(path, 2 * limits.quota_bytes + 65536)
            except FileNotFoundError:
                return
            except (OSError, StorageLimitError) as exc:
                self._log.error("cannot import %s: %s; %s", path, exc, keep)
                return
            data = _parse_tark_storage(raw)
            if data is None:
                self._log.error("%s is not a JSON object of strings; %s", path, keep)
                return
            try:
                total = self._check_import(data, limits)
            except StorageLimitError as exc:
                self._log.error("cannot import %s: %s; %s", path, exc, keep)
                return
            # Keys already in the database are newer than the file: keep them.
            self._conn.executemany("INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)", data.items())
            self._set_used(total)
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
            self._conn.execute("INSERT INTO meta (name, value) VALUES (?, ?)",
                               (_IMPORTED, json.dumps({"from": str(path), "keys": len(data), "at": stamp})))
            self._log.info("imported %d keys from %s", len(data), path)

    def _check_import(self, data: dict[str, str], limits: StoreLimits) -> int:
        """The bytes used once `data` is imported (keys already stored are kept, not counted twice)."""
        total = self._used_bytes()
        for key, value in data.items():
            key_bytes, value_bytes = len(key.encode("utf-8", "surrogatepass")), len(value.encode("utf-8", "surrogatepass"))
            if key_bytes > limits.max_key_bytes:
                raise StorageLimitError(f"a key of {key_bytes} bytes exceeds the {limits.max_key_bytes}-byte key limit")
            if value_bytes > limits.max_value_bytes:
                raise StorageLimitError(f"the value of a key is {value_bytes} bytes, over the "
                                        f"{limits.max_value_bytes}-byte value limit")
            if self._conn.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is None:
                total += key_bytes + value_bytes
        if total > limits.quota_bytes:
            raise StorageLimitError(f"importing it needs {total} bytes, over the storage quota of "
                                    f"{limits.quota_bytes} bytes")
        return total

    def _used_bytes(self) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE name = ?", (_USED,)).fetchone()[0])

    def _set_used(self, used: int) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE name = ?", (str(used), _USED))

    def _count_usage_once(self) -> None:
        """A database from before the counter existed: one scan, in the transaction that records the result (a
        concurrent first open finds the row and skips the scan)."""
        with self._write():
            if self._conn.execute("SELECT 1 FROM meta WHERE name = ?", (_USED,)).fetchone() is None:
                self._conn.execute("INSERT INTO meta (name, value) VALUES (?, ?)",
                                   (_USED, str(full_scan_bytes(self._conn))))

    def _write(self) -> "_Transaction":
        return _Transaction(self._conn)

    @contextlib.contextmanager
    def _busy_wait(self, wait_s: float | None) -> Iterator[None]:
        if wait_s is None or wait_s >= self._busy_timeout_s:
            yield
            return
        self._conn.execute(f"PRAGMA busy_timeout = {max(0, int(wait_s * 1000))}")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")


def full_scan_bytes(conn: sqlite3.Connection) -> int:
    """What the usage counter must always equal: the sum over the whole table (migration, and tests)."""
    return conn.execute("SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))), 0) "
                        "FROM kv").fetchone()[0]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so concurrent writers queue on the busy
    timeout instead of failing on a read-to-write upgrade."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, _exc, _tb) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _check_schema(conn: sqlite3.Connection, db_path: Path) -> None:
    found = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
    foreign = sorted(f"{kind} '{name}'" for kind, name in found if (kind, name) not in _OUR_SCHEMA)
    if foreign:
        raise ForeignDatabaseError(
            f"{db_path} contains {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which tark did not "
            "create; it is not used. Move the file away to start with empty storage")


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The content of a regular file (no symlink) of at most `max_bytes`, checked before reading."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StorageLimitError("it is not a regular file")
        if info.st_size > max_bytes:
            raise StorageLimitError(f"it is {info.st_size} bytes, more than the storage quota can hold "
                                    f"(files over {max_bytes} bytes are not read)")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise StorageLimitError(f"it grew past {max_bytes} bytes while being read")
        return data
    finally:
        os.close(fd)


def _parse_tark_storage(raw: bytes) -> dict[str, str] | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return None
    return data


@contextlib.contextmanager
def _setup_lock(directory: Path) -> Iterator[None]:
    """Serialise database set-up between threads and processes. Switching to WAL needs an exclusive lock that
    SQLite does not wait for, so concurrent first opens would fail with "database is locked". The lock is a
    flock on the directory: closing an extra descriptor of the database file would drop SQLite's own
    (POSIX) locks."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create_private(db_path: Path) -> None:
    """Create the directory 0700 and the database file 0600 before SQLite touches them (no umask window).
    SQLite gives its -wal and -shm files the database file's mode."""
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(db_path.parent, 0o700)
    fd = os.open(db_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class StorageCapability:
    """Host implementation of tark:storage for one plugin. The database is opened on first use."""

    def __init__(self, config: StorageConfig, audit: AuditLog, log: logging.Logger) -> None:
        self.config = config
        self._audit = audit
        self._log = log
        self._store: KeyValueStore | None = None
        self._open_lock = threading.Lock()

    def get(self, key: str) -> Outcome:
        store = self._open("get", key)
        if store is None:
            return Outcome(FAILED)
        try:
            value = store.get(key)
        except sqlite3.Error as exc:
            return self._db_failed("get", exc)
        data = b"" if value is None else value.encode("utf-8")
        if len(data) > self.config.max_result_bytes:
            self._log.warning("storage.get %r: value of %d bytes exceeds the %d-byte result limit",
                              key[:64], len(data), self.config.max_result_bytes)
            return Outcome(FAILED)
        return Outcome.written(data)

    def list_keys(self) -> Outcome:
        """The plugin's keys as a JSON array, sorted (wit/tark.wit storage.list-keys; the core ABI has none)."""
        store = self._open("list_keys", "")
        if store is None:
            return Outcome(FAILED)
        try:
            keys = store.keys()
        except sqlite3.Error as exc:
            return self._db_failed("list_keys", exc)
        data = json.dumps(keys, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) > self.config.max_result_bytes:
            self._log.warning("storage.list_keys: %d bytes of keys exceed the %d-byte result limit",
                              len(data), self.config.max_result_bytes)
            return Outcome(FAILED)
        return Outcome.written(data)

    def set(self, key: str, value: str, deadline: float | None = None) -> Outcome:
        """`deadline` (monotonic): the call's; waiting for another writer ends there."""
        store = self._open("set", key)
        if store is None:
            return Outcome(FAILED)
        try:
            self._check_sizes(key, value)
            store.set(key, value, self.config.quota_bytes, _left(deadline))
        except StorageLimitError as exc:
            self._log.warning("storage.set %r refused: %s", key[:64], exc)
            return Outcome(FAILED)
        except sqlite3.Error as exc:
            return self._db_failed("set", exc)
        return Outcome(0)

    def delete(self, key: str, deadline: float | None = None) -> Outcome:
        store = self._open("delete", key)
        if store is None:
            return Outcome(FAILED)
        if len(key.encode()) <= self.config.max_key_bytes:  # a longer key cannot exist
            try:
                store.delete(key, _left(deadline))
            except sqlite3.Error as exc:
                return self._db_failed("delete", exc)
        return Outcome(0)

    def _db_failed(self, op: str, exc: sqlite3.Error) -> Outcome:
        self._log.error("storage.%s failed on %s: %s", op, self.config.db_path, exc)
        return Outcome(FAILED)

    def close(self) -> None:
        with self._open_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _check_sizes(self, key: str, value: str) -> None:
        if len(key.encode()) > self.config.max_key_bytes:
            raise StorageLimitError(f"key longer than {self.config.max_key_bytes} bytes")
        if len(value.encode()) > self.config.max_value_bytes:
            raise StorageLimitError(f"value longer than {self.config.max_value_bytes} bytes")

    def _open(self, op: str, key: str) -> KeyValueStore | None:
        decision = self.config.grants().check(StorageAccess())
        if not decision.allowed:
            self._audit.denied("storage", f"{op} {key}", decision.reason)
            return None
        self._audit.allowed("storage", f"{op} {key}", decision.reason)
        with self._open_lock:
            if self._store is None:
                store = None
                try:
                    store = KeyValueStore(self.config.db_path, self.config.busy_timeout_s, self._log)
                    store.import_tark_json(self.config.data_dir / TARK_JSON_FILE, StoreLimits(
                        self.config.quota_bytes, self.config.max_key_bytes, self.config.max_value_bytes))
                except (OSError, sqlite3.Error) as exc:
                    self._log.error("cannot open plugin storage %s: %s", self.config.db_path, exc)
                    if store is not None:
                        store.close()
                    return None
                self._store = store
            return self._store


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()
