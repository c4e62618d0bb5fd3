"""Whether the supervisor may start one more worker (docs/limits.md, "Many plugins").

Pure: the supervisor measures `Usage` (workers running, descriptors open, memory available) and asks `refusal`
before every worker start. A start is refused while it would still leave every running worker room to work, not
once something already failed: a worker that cannot start is one clear error for one call, a daemon out of
descriptors fails every worker at once. The pool first stops idle workers (least recently used first) to make
room, and refuses only when none is left to stop.
"""

from __future__ import annotations

import attrs

MIB = 1024 * 1024

# A worker costs the supervisor 4 descriptors (its socket's connection and mailbox, the pidfd and the exit-status
# pipe; tests/test_scale.py counts them). Its capabilities open more while it works: the storage database (3
# with its WAL files), HTTP and websocket connections. Each running worker keeps headroom for those.
WORKER_FDS = 4
WORKER_HEADROOM_FDS = 4
# Always left free, whatever the number of workers: control connections, the audit log, a module compile.
FD_RESERVE = 64
# What a new worker may take before its first call returns: an idle worker's unique memory is about 6 MiB
# (ops/bench), its first instance and compile some more.
MEMORY_PER_WORKER = 32 * MIB
MIN_AVAILABLE_MEMORY = 256 * MIB


@attrs.frozen
class Capacity:
    """What the supervisor may use. `max_workers` and `min_available_memory` come from the admin policy's
    [limits] (policy/admin_policy.py); `fd_limit` is the supervisor's soft RLIMIT_NOFILE."""

    fd_limit: int
    max_workers: int | None = None
    min_available_memory: int = MIN_AVAILABLE_MEMORY
    worker_fds: int = WORKER_FDS
    worker_headroom_fds: int = WORKER_HEADROOM_FDS
    fd_reserve: int = FD_RESERVE
    memory_per_worker: int = MEMORY_PER_WORKER
    policy_source: str = "the admin policy"


@attrs.frozen
class Usage:
    workers: int  # running now
    open_fds: int
    available_memory: int | None  # bytes (MemAvailable, or what the supervisor's cgroup still allows); None: unknown


def refusal(capacity: Capacity, usage: Usage) -> str | None:
    """Why one more worker may not start now (naming the resource and what to do), or None."""
    if capacity.max_workers is not None and usage.workers >= capacity.max_workers:
        return (f"{usage.workers} workers are running, the most the admin policy allows "
                f"([limits] max_workers = {capacity.max_workers} in {capacity.policy_source}); "
                "stop a plugin's worker or raise max_workers")
    # What is open, the new worker's own, headroom for every worker after the start, and the fixed reserve.
    needed = (usage.open_fds + capacity.worker_fds + (usage.workers + 1) * capacity.worker_headroom_fds
              + capacity.fd_reserve)
    if needed > capacity.fd_limit:
        return (f"file descriptors: {usage.open_fds} of the supervisor's {capacity.fd_limit} (open files limit) "
                f"are open with {usage.workers} workers running, and one more would leave too few for them "
                f"to work ({needed} needed); raise the open files limit (ulimit -n, LimitNOFILE= in systemd) or "
                "stop plugins")
    if usage.available_memory is not None and \
            usage.available_memory - capacity.memory_per_worker < capacity.min_available_memory:
        return (f"memory: {usage.available_memory // MIB} MiB available, a new worker may need "
                f"{capacity.memory_per_worker // MIB} MiB and {capacity.min_available_memory // MIB} MiB stay "
                f"reserved ([limits] min_available_memory_mib in {capacity.policy_source}); stop plugins or "
                "add memory")
    return None
