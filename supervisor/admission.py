"""Measures what the supervisor uses and asks policy/capacity.py whether one more worker may start.

Cheap enough to run before every worker start: one listing of /proc/self/fd (about 1 ms at 5000 descriptors),
/proc/meminfo and the cgroup's memory files.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Callable

from policy.admin_policy import AdminPolicy, AdminPolicyError
from policy.capacity import MIB, MIN_AVAILABLE_MEMORY, Capacity, Usage, refusal

_CGROUP_ROOT = Path("/sys/fs/cgroup")


class Admission:
    """`policy()` is the admin policy in force (it may raise AdminPolicyError: a broken policy bounds nothing
    here; it already denies every capability)."""

    def __init__(self, policy: Callable[[], AdminPolicy] = AdminPolicy) -> None:
        self._policy = policy

    def capacity(self) -> Capacity:
        try:
            policy = self._policy()
        except AdminPolicyError:
            policy = AdminPolicy()
        memory = policy.min_available_memory_mib
        return Capacity(
            fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            max_workers=policy.max_workers,
            min_available_memory=MIN_AVAILABLE_MEMORY if memory is None else int(memory * MIB),
            policy_source=policy.source,
        )

    def refusal(self, workers: int) -> str | None:
        """Why a worker may not start while `workers` run, or None."""
        return refusal(self.capacity(), Usage(workers, open_fds(), available_memory()))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor


def available_memory() -> int | None:
    """Bytes a new process may still take: the kernel's MemAvailable, or less if the supervisor's cgroup (v2)
    has a memory.max closer to its memory.current."""
    available = None
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    cgroup = _own_cgroup()
    if cgroup is not None:
        try:
            limit = (cgroup / "memory.max").read_text().strip()
            if limit != "max":
                left = int(limit) - int((cgroup / "memory.current").read_text())
                available = left if available is None else min(available, left)
        except (OSError, ValueError):
            pass
    return available


def _own_cgroup() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return _CGROUP_ROOT / line[3:].lstrip("/")
    except OSError:
        pass
    return None
