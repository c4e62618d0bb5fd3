"""Stand-in worker entries for the fork server tests: stdlib only, so what they report about the process is what
the fork server gave it (its preloaded modules, descriptors, session, environment). `spec` is a file path or a
number of seconds, not a WorkerSpec."""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time


def report(spec: bytes) -> None:
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    with open(spec.decode(), "w") as file:
        json.dump({"modules": sorted(sys.modules), "pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
                   "ppid": os.getppid(), "fds": fds, "environ": dict(os.environ),
                   "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),
                   "main_script": getattr(sys.modules["__main__"], "__file__", None),
                   "seccomp_compiled": _seccomp_compiled()}, file)


def _seccomp_compiled() -> bool:
    """Whether the fork server handed down the compiled seccomp program (looked up, not imported)."""
    seccomp = sys.modules.get("worker.lockdown.seccomp")
    return seccomp is not None and seccomp.compiled.cache_info().currsize == 1  # PR_GET_DUMPABLE


def linger(spec: bytes) -> None:
    time.sleep(float(spec.decode()))


def exit_with(spec: bytes) -> None:
    sys.exit(int(spec.decode()))
