"""Plugin storage (`tark:storage`) at 10 and at 100 000 keys (docs/performance.md, "Storage"): the median time of
one set (a new key, then an overwrite) and one get on the SQLite store the capability writes through, with the
quota check. Both stores are filled in bulk through the tark storage.json import, then measured in place, one
operation on each in turn so that the machine's load falls on both alike."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

from ops.bench.common import Result, median, scratch
from supervisor.capabilities.storage import KeyValueStore, StoreLimits

QUOTA = 1 << 30  # far away: the quota check runs, it never refuses
VALUE = "v" * 64
OPERATIONS = ("set (new key)", "set (overwrite)", "get")


def filled_store(directory: Path, keys: int) -> KeyValueStore:
    directory.mkdir()
    seed = directory / "storage.json"
    seed.write_text(json.dumps({f"key-{i:07d}": VALUE for i in range(keys)}))
    store = KeyValueStore(directory / "storage.db", 5.0, logging.getLogger("bench.storage"))
    store.import_tark_json(seed, StoreLimits(QUOTA, 1 << 20, 1 << 20))
    return store


def one_round(store: KeyValueStore, keys: int, index: int, rng: random.Random) -> tuple[float, float, float]:
    started = time.perf_counter()
    store.set(f"new-{index:07d}", VALUE, QUOTA)
    new = time.perf_counter() - started
    key = f"key-{rng.randrange(keys):07d}"
    started = time.perf_counter()
    store.set(key, VALUE[::-1], QUOTA)
    overwrite = time.perf_counter() - started
    started = time.perf_counter()
    store.get(key)
    return new, overwrite, time.perf_counter() - started


def measure(quick: bool) -> list[Result]:
    small, large, operations = (10, 10_000, 200) if quick else (10, 100_000, 3000)
    with scratch() as tmp:
        few, many = filled_store(tmp / "few", small), filled_store(tmp / "many", large)
        samples: dict[int, list[tuple[float, float, float]]] = {small: [], large: []}
        try:
            rng = random.Random(1)
            for index in range(operations):
                samples[small].append(one_round(few, small, index, rng))
                samples[large].append(one_round(many, large, index, rng))
        finally:
            few.close()
            many.close()
    us = {size: [median([row[i] for row in rows]) * 1e6 for i in range(len(OPERATIONS))]
          for size, rows in samples.items()}
    return [Result(f"storage {what} at {large:,} keys", us[large][i], "µs", f"at {small} keys", us[small][i],
                   target_ratio=1.5 if what.startswith("set") else None,
                   note="target: flat from 10 to 100 000 keys (within 1.5x: SQLite's b-tree gains a level or two)"
                   if what == "set (new key)" else "") for i, what in enumerate(OPERATIONS)]
