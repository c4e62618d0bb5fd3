"""Locks the worker process down before it runs guest code (design: "the worker holds no secrets ... is locked down
before it runs guest code ... where a kernel feature is missing it degrades loudly").

Applied in two steps because the set-up itself needs files: `lock_down` at start (closes every inherited fd but
stdio, sets no_new_privs, no core dumps and the address-space cap), `limit_open_files` once the ZeroMQ socket and
the engine are open. Each returns the warnings for what could not be applied; the worker hands them to the
supervisor in Ready, which logs them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource

from worker import protocol

PR_SET_NO_NEW_PRIVS = 38
STDIO = (0, 1, 2)


def lock_down(spec: protocol.WorkerSpec) -> list[str]:
    warnings: list[str] = []
    close_inherited_fds(STDIO if spec.module_fd is None else (*STDIO, spec.module_fd))
    warnings += _no_new_privs()
    warnings += _set_limit("RLIMIT_CORE", resource.RLIMIT_CORE, 0)
    if spec.os_memory_limit_bytes is not None:
        reserved = spec.engine.memory_reservation + spec.engine.memory_guard_size
        if reserved > spec.os_memory_limit_bytes // 4:
            warnings.append(
                f"RLIMIT_AS of {spec.os_memory_limit_bytes} bytes not applied: the engine reserves {reserved} bytes"
                " of address space per linear memory"
            )
        else:
            warnings += _set_limit("RLIMIT_AS", resource.RLIMIT_AS, spec.os_memory_limit_bytes)
    return warnings


def limit_open_files(limit: int) -> list[str]:
    return _set_limit("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, limit)


def close_inherited_fds(keep: tuple[int, ...] = STDIO) -> None:
    """Close what the fork server handed down (its "alive" pipe, the resource tracker's pipe, the parent sentinel):
    the worker needs none of them, and writing to the alive pipe would stop the fork server."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:  # the directory listing's own fd, already closed
                    raise


def _no_new_privs() -> list[str]:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return [f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"]
    except (OSError, AttributeError) as exc:
        return [f"prctl(PR_SET_NO_NEW_PRIVS) unavailable: {exc}"]
    return []


def _set_limit(name: str, which: int, value: int) -> list[str]:
    try:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY and value > hard:
            value = hard
        resource.setrlimit(which, (value, value))
    except (OSError, ValueError) as exc:
        return [f"{name} of {value} not applied: {exc}"]
    return []
