"""A distinct unprivileged uid per worker when the supervisor runs as root (docs/security.md, "Own uid").

Two steps: the capability bounding set is emptied right after the fork (it is per thread, so before any thread
exists); the uid and gid change once the worker has connected to its endpoint and loaded its module (both need the
supervisor's uid). glibc applies setresuid/setgroups to every thread, and dropping uid 0 clears every capability.
"""

from __future__ import annotations

import ctypes
import os

from worker.lockdown.process import LayerFailed

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_libc = ctypes.CDLL(None, use_errno=True)


def drop_bounding_set() -> None:
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the kernel's last capability
                return
            raise LayerFailed(f"prctl(PR_CAPBSET_DROP, {cap}) failed: {os.strerror(ctypes.get_errno())}")


def become(uid: int) -> None:
    """Drop to `uid` (and the gid of the same number) for good, with no supplementary groups."""
    try:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise LayerFailed(f"cannot drop to uid {uid}: {exc.strerror}") from None
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        raise LayerFailed(f"uid {uid} did not stick: {os.getresuid()} / {os.getresgid()}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise LayerFailed("the worker could become root again after dropping its uid")
