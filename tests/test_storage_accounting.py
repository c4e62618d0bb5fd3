"""tark:storage quota accounting: the usage counter always equals a full scan of the table (after any sequence of
operations, from any number of connections, after a kill -9 in the middle of a write, and for a database from
before the counter existed), and a set costs the same work at 10 keys as at 20 000 (counted, not timed)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.capabilities.storage import DB_FILE, KeyValueStore, StorageLimitError, full_scan_bytes

LOG = logging.getLogger("test.storage")
QUOTA = 400

# No lone surrogates: SQLite stores UTF-8, which cannot hold them (the worker's protocol never produces them).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
keys = st.sampled_from(["a", "b", "ключ", "🔑", "", "a\x00b"]) | text
operations = st.lists(st.tuples(st.sampled_from(["set", "delete"]), st.integers(0, 1), keys, text), max_size=60)


def scan(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return full_scan_bytes(conn)


def counter(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE name = 'used_bytes'").fetchone()[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_usage_always_equals_a_full_scan_across_two_connections(ops: list[tuple[str, int, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / DB_FILE
        stores = [KeyValueStore(db, 5.0, LOG), KeyValueStore(db, 5.0, LOG)]  # like two processes: no shared cache
        try:
            for op, which, key, value in ops:
                store = stores[which]
                if op == "set":
                    try:
                        store.set(key, value, QUOTA)
                    except StorageLimitError:
                        pass
                else:
                    store.delete(key)
                assert store.used_bytes() == stores[1 - which].used_bytes() == scan(db)
                assert scan(db) <= QUOTA
        finally:
            for store in stores:
                store.close()


def test_a_refused_set_changes_neither_the_table_nor_the_counter(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    store = KeyValueStore(db, 5.0, LOG)
    try:
        store.set("k", "x" * 90, 100)
        with pytest.raises(StorageLimitError, match="quota of 100 bytes exceeded"):
            store.set("other", "y" * 20, 100)
        assert store.get("other") is None
        assert store.used_bytes() == scan(db) == 91
        store.set("k", "short", 100)  # shrinking is always allowed
        assert store.used_bytes() == scan(db) == 6
    finally:
        store.close()


def test_a_database_from_before_the_counter_is_counted_once_on_open(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    with sqlite3.connect(db) as conn:  # the schema the supervisor wrote before the counter existed
        conn.executescript("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
                           "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;")
        conn.executemany("INSERT INTO kv VALUES (?, ?)", [(f"key{i}", "é" * i) for i in range(300)])
    expected = scan(db)
    store = KeyValueStore(db, 5.0, LOG)
    try:
        assert store.used_bytes() == expected == counter(db)
        store.set("key1", "", 10**9)
        assert store.used_bytes() == scan(db) == expected - 2
    finally:
        store.close()
    # The next open finds the counter and does not scan again (a scan would fix a wrong value: make one wrong).
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE name = 'used_bytes'")
    again = KeyValueStore(db, 5.0, LOG)
    try:
        assert again.used_bytes() == 7
    finally:
        again.close()


class _Counting:
    """What SQLite does for one statement sequence: statements run and virtual-machine steps executed."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.statements: list[str] = []
        self.steps = 0
        self._conn = conn

    def __enter__(self) -> "_Counting":
        self._conn.set_trace_callback(self.statements.append)
        self._conn.set_progress_handler(self._step, 1)
        return self

    def _step(self) -> int:
        self.steps += 1
        return 0

    def __exit__(self, *_exc: object) -> None:
        self._conn.set_trace_callback(None)
        self._conn.set_progress_handler(None, 1)


def _work_of_one_set(tmp_path: Path, rows: int) -> tuple[list[str], int, int]:
    db = tmp_path / f"{rows}" / DB_FILE
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
                           "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;")
        conn.executemany("INSERT INTO kv VALUES (?, ?)", ((f"k{i:06d}", "v" * 20) for i in range(rows)))
    store = KeyValueStore(db, 5.0, LOG)
    try:
        conn = store._conn  # noqa: SLF001 - the test watches the store's own connection
        with _Counting(conn) as new_key:
            store.set("k000005x", "new value", 10**9)
        with _Counting(conn) as same_key:
            store.set("k000005x", "changed", 10**9)
        with _Counting(conn) as removed:
            store.delete("k000005x")
        with _Counting(conn) as full_scan:
            full_scan_bytes(conn)
        assert store.used_bytes() == scan(db)
    finally:
        store.close()
    return new_key.statements + same_key.statements + removed.statements, \
        new_key.steps + same_key.steps + removed.steps, full_scan.steps


def test_set_and_delete_do_the_same_work_at_10_and_20000_keys(tmp_path: Path) -> None:
    small_sql, small_steps, small_scan = _work_of_one_set(tmp_path, 10)
    large_sql, large_steps, large_scan = _work_of_one_set(tmp_path, 20_000)
    # BEGIN, read the old size, read the counter, write the row, write the counter, COMMIT; a delete one less.
    assert len(small_sql) == len(large_sql) == 6 + 6 + 5
    assert small_steps == large_steps
    # The measure is sensitive: summing the table (what every set used to do) grows with it.
    assert large_scan > 1000 * small_scan // 10


_KILL_MID_WRITE = textwrap.dedent("""
    import logging, os, random, signal, sys
    from pathlib import Path
    from supervisor.capabilities.storage import KeyValueStore

    db, seed, die_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = KeyValueStore(db, 5.0, logging.getLogger())
    counter_writes = 0

    def trace(sql: str) -> None:  # die between a row's write and the counter's, inside the transaction
        global counter_writes
        if sql.startswith("UPDATE meta"):
            counter_writes += 1
            if counter_writes == die_at:
                os.kill(os.getpid(), signal.SIGKILL)

    store._conn.set_trace_callback(trace)
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        key = f"k{rng.randrange(50)}"
        if rng.random() < 0.3:
            store.delete(key)
        else:
            store.set(key, "v" * rng.randrange(200), 10**9)
""")


@pytest.mark.parametrize("seed", range(3))
def test_kill_9_inside_a_write_leaves_the_counter_equal_to_the_table(tmp_path: Path, seed: int) -> None:
    db = tmp_path / DB_FILE
    for round_, die_at in enumerate((40, 1, 300)):
        child = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, str(db), str(seed * 10 + round_), str(die_at)],
                               capture_output=True, text=True, timeout=60)
        assert child.returncode == -signal.SIGKILL, child.stderr
        assert counter(db) == scan(db)
        assert KeyValueStore(db, 5.0, LOG).used_bytes() == scan(db)


def test_kill_9_at_a_random_moment_of_a_busy_writer(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    for round_ in range(4):
        child = subprocess.Popen([sys.executable, "-c", _KILL_MID_WRITE, str(db), str(round_), str(10**9)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(0.05 + 0.07 * round_)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        assert counter(db) == scan(db) > 0
