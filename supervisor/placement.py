"""Where a worker runs: each worker gets a home CPU, and its threads, the supervisor's ZeroMQ I/O thread that
serves its socket and the supervisor thread driving one of its calls all run there.

A host call is a strict ping-pong between two processes and their ZeroMQ I/O threads. Measured on the 2-core
machine under load (docs/performance.md, "CPU placement"): with every thread of both ends on one CPU a host call
took ~1.5x a raw pyzmq round trip; on different CPUs 7-8x, and left to the scheduler anywhere from 1.5x to 8x
(4.3x median), depending on where it happened to put the threads. Workers are spread over the CPUs (fewest
workers first), so calls to different plugins still run in parallel. Pinning is best effort: a thread we may not
move is left alone.
"""

from __future__ import annotations

import os
import threading
from typing import Iterable


class CpuPlacement:
    def __init__(self, cpus: Iterable[int] | None = None) -> None:
        self.cpus = frozenset(os.sched_getaffinity(0) if cpus is None else cpus)
        self._workers = {cpu: 0 for cpu in sorted(self.cpus)}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return len(self.cpus) > 1

    def assign(self) -> int:
        """A home CPU for a new worker (the one with the fewest); give it back with `release`."""
        with self._lock:
            cpu = min(self._workers, key=self._workers.__getitem__)
            self._workers[cpu] += 1
        return cpu

    def release(self, cpu: int) -> None:
        with self._lock:
            self._workers[cpu] -= 1


def pin_threads(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` to `cpu` (a worker has made all its threads by Ready; threads made later
    inherit the affinity). Threads we may not move are skipped."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, (cpu,))
        except OSError:
            pass
