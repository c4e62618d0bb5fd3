"""Plugin storage (`tark:storage`) at 10 and at 100 000 keys (docs/performance.md, "Storage"): the median time of
one set (a new key, then an overwrite) and one get on the SQLite store the capability writes through, with the
quota check. The store is filled in bulk through the tark storage.json import, then measured in place."""

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


def timings(directory: Path, keys: int, operations: int) -> dict[str, float]:
    directory.mkdir()
    seed = directory / "storage.json"
    seed.write_text(json.dumps({f"key-{i:07d}": VALUE for i in range(keys)}))
    store = KeyValueStore(directory / "storage.db", 5.0, logging.getLogger("bench.storage"))
    try:
        store.import_tark_json(seed, StoreLimits(QUOTA, 1 << 20, 1 << 20))
        rng = random.Random(keys)
        new, overwrite, get = [], [], []
        for index in range(operations):
            started = time.perf_counter()
            store.set(f"new-{index:07d}", VALUE, QUOTA)
            new.append(time.perf_counter() - started)
            key = f"key-{rng.randrange(keys):07d}"
            started = time.perf_counter()
            store.set(key, VALUE[::-1], QUOTA)
            overwrite.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.get(key)
            get.append(time.perf_counter() - started)
    finally:
        store.close()
    return {"set (new key)": median(new) * 1e6, "set (overwrite)": median(overwrite) * 1e6, "get": median(get) * 1e6}


def measure(quick: bool) -> list[Result]:
    small, large, operations = (10, 10_000, 200) if quick else (10, 100_000, 2000)
    with scratch() as tmp:
        few = timings(tmp / "few", small, operations)
        many = timings(tmp / "many", large, operations)
    return [Result(f"storage {what} at {large:,} keys", many[what], "µs", f"at {small} keys", few[what],
                   target_ratio=1.5 if what.startswith("set") else None,
                   note="target: flat from 10 to 100 000 keys (within 1.5x: SQLite's b-tree depth grows by a "
                        "level)" if what == "set (new key)" else "") for what in few]
