"""The supervisor's own hardening (docs/security.md): it holds every secret, so no process of the same uid may read
its memory, environment or ptrace it."""

from __future__ import annotations

import ctypes
import logging
import os

PR_SET_DUMPABLE = 4
_log = logging.getLogger(__name__)


def make_non_dumpable() -> bool:
    """PR_SET_DUMPABLE 0: /proc/<pid>/mem, environ and ptrace are refused to other processes of the same uid, and
    no core dump is written. Returns False (and logs why) where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        _log.warning("cannot make the supervisor non-dumpable: %s; processes of the same uid can read its memory",
                     os.strerror(ctypes.get_errno()))
        return False
    return True
