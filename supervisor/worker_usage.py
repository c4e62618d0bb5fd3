"""Memory and CPU of each worker for `tark supervisor status` / `tark plugin status`, measured in the daemon.

A worker's unique memory (USS) needs a walk of its whole address space in the kernel (/proc/PID/smaps_rollup,
about 0.5 ms for a wasmtime worker): 0.5 s in series for 1000 workers. An idle worker's USS does not change, so
it is read again only for a worker that ran a call since the last reading. RSS and CPU time come from one read of
/proc/PID/stat (about 20 µs).
"""

from __future__ import annotations

import os
import threading

MIB = 2**20
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PRIVATE = (b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")


class WorkerUsage:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uss: dict[tuple[str, int], tuple[int, float]] = {}  # (plugin, pid) -> (its calls then, USS in MiB)

    def annotate(self, workers: list[dict]) -> list[dict]:
        """Each status dict with rss_mib, uss_mib and cpu_s (None when the process is gone or unreadable)."""
        annotated = [self._one(worker) for worker in workers]
        live = {(worker["name"], worker["pid"]) for worker in workers if worker.get("pid")}
        with self._lock:
            for key in [key for key in self._uss if key not in live]:
                del self._uss[key]
        return annotated

    def _one(self, worker: dict) -> dict:
        worker = dict(worker, rss_mib=None, uss_mib=None, cpu_s=None)
        pid = worker.get("pid")
        if not pid:
            return worker
        try:
            worker["cpu_s"], worker["rss_mib"] = _cpu_and_rss(pid)
            key = (worker["name"], pid)
            with self._lock:
                cached = self._uss.get(key)
            if cached is not None and cached[0] == worker["calls"]:
                worker["uss_mib"] = cached[1]
            else:
                worker["uss_mib"] = _uss_mib(pid)  # what stopping this worker would free
                with self._lock:
                    self._uss[key] = (worker["calls"], worker["uss_mib"])
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile, or not readable (a non-root supervisor and a worker of its own uid that is not)
        return worker


def _cpu_and_rss(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold anything
    # fields[0] is field 3 of proc(5): utime 14, stime 15, rss 24
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE / MIB


def _uss_mib(pid: int) -> float:
    kib = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            if line.startswith(_PRIVATE):
                kib += int(line.split()[1])
    return kib / 1024
