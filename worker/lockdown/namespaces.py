"""A network namespace with no interfaces but a down loopback, so the worker has no network at all
(docs/security.md, "Namespaces"). As root the worker unshares it directly; otherwise inside a fresh user namespace
that maps only its own uid and gid. unshare(CLONE_NEWUSER) needs a single-threaded process: this runs right after
the fork, before ZeroMQ or the engine start a thread."""

from __future__ import annotations

import ctypes
import os

from worker.lockdown.process import LayerFailed

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000  # os.unshare and its constants arrive only in Python 3.12

_libc = ctypes.CDLL(None, use_errno=True)


def isolate_network() -> list[str]:
    """Unshare the network namespace (and the user namespace when not root). Returns the layers now active."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _unshare(CLONE_NEWNET, "network")
        return ["netns"]
    _unshare(CLONE_NEWUSER | CLONE_NEWNET, "user and network")
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise LayerFailed(f"cannot map the worker's uid into its user namespace: {exc}") from None
    return ["userns", "netns"]


def _unshare(flags: int, what: str) -> None:
    if _libc.unshare(flags) != 0:
        raise LayerFailed(f"unshare of the {what} namespace failed: {os.strerror(ctypes.get_errno())} (unprivileged user namespaces "
                          "may be disabled: sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)
