"""Process-wide restrictions: inherited descriptors, no_new_privs, dumpability, resource limits
(docs/security.md, "Lockdown")."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


class LayerFailed(Exception):
    """A lockdown step could not be applied; the message says what and why."""


def prctl(option: int, value: int, what: str) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise LayerFailed(f"{what} failed: {os.strerror(ctypes.get_errno())}")


def close_inherited_fds(keep: tuple[int, ...]) -> None:
    """Close everything the fork server handed down but `keep` (stdio and the module memfd)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:  # the directory listing's own fd, already closed
                    raise


def no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


def non_dumpable() -> None:
    """No core dumps, no ptrace and no /proc/<pid>/mem or environ for other processes of the same uid."""
    prctl(PR_SET_DUMPABLE, 0, "prctl(PR_SET_DUMPABLE, 0)")


def set_limit(name: str, value: int) -> None:
    which = getattr(resource, name)
    try:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY and value > hard:
            value = hard
        resource.setrlimit(which, (value, value))
    except (OSError, ValueError) as exc:
        raise LayerFailed(f"{name} of {value} not applied: {exc}") from None


def no_file_writes() -> None:
    """RLIMIT_FSIZE 0: the worker writes no files; SIGXFSZ ignored so a write through an inherited descriptor to a
    regular file fails with EFBIG instead of killing the worker."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    set_limit("RLIMIT_FSIZE", 0)
