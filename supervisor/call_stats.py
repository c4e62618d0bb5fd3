"""What the pool counts about one plugin's calls, for `tark plugin status` and the Prometheus metrics."""

from __future__ import annotations

import threading
from typing import Any

DURATION_BUCKETS_S = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0)
DENIED = -2  # the ABI code of a refused capability


class PluginStats:
    """Counters of one plugin across its workers. Written by the call that holds the plugin's slot, read by
    status requests from other threads (hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host_calls: dict[str, dict[str, int]] = {}
        self._bucket_counts = [0] * (len(DURATION_BUCKETS_S) + 1)
        self._duration_sum = 0.0
        self._outcomes: dict[str, int] = {}

    def host_call(self, capability: str, code: int) -> None:
        decision = "denied" if code == DENIED else "allowed"
        with self._lock:
            counts = self._host_calls.setdefault(capability, {"allowed": 0, "denied": 0})
            counts[decision] += 1

    def call_ended(self, seconds: float, error_kind: str | None) -> None:
        index = next((i for i, bound in enumerate(DURATION_BUCKETS_S) if seconds <= bound), len(DURATION_BUCKETS_S))
        with self._lock:
            self._bucket_counts[index] += 1
            self._duration_sum += seconds
            outcome = error_kind or "ok"
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "host_calls": {cap: dict(counts) for cap, counts in self._host_calls.items()},
                "denials": sum(counts["denied"] for counts in self._host_calls.values()),
                "outcomes": dict(self._outcomes),
                "call_seconds": {"buckets": list(DURATION_BUCKETS_S), "counts": list(self._bucket_counts),
                                 "sum": self._duration_sum},
            }
