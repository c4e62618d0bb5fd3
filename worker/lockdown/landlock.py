"""Landlock (docs/security.md, "Landlock"): once applied, the worker has no filesystem access at all, no TCP, and
(where the kernel's ABI has scoping) cannot signal or reach abstract unix sockets of processes outside its domain.

Small ctypes code over the three landlock syscalls: the Python bindings on PyPI stop before ABI 6 scoping. A ruleset
that handles every right and adds no rule denies everything it handles.
"""

from __future__ import annotations

import ctypes
import os

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1

# Filesystem rights by the ABI version that introduced them.
_FS_ABI1 = (1 << 13) - 1  # execute, write/read file, read dir, remove dir/file, make char/dir/reg/sock/fifo/block/sym
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The kernel's landlock ABI version, 0 where landlock is missing or disabled."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def ruleset_for(abi: int) -> tuple[_RulesetAttr, int, list[str]]:
    """The deny-everything ruleset this ABI can express, its size argument, and what it covers (for reporting)."""
    fs = _FS_ABI1
    covers = ["fs"]
    if abi >= 2:
        fs |= _FS_REFER
    if abi >= 3:
        fs |= _FS_TRUNCATE
    if abi >= 5:
        fs |= _FS_IOCTL_DEV
    net = scoped = 0
    size = 8
    if abi >= 4:
        net, size = _NET_BIND_TCP | _NET_CONNECT_TCP, 16
        covers.append("tcp")
    if abi >= 6:
        scoped, size = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL, 24
        covers += ["signals", "abstract-unix"]
    return _RulesetAttr(fs, net, scoped), size, covers


class LandlockUnavailable(Exception):
    pass


def restrict_self(abi: int) -> list[str]:
    """Deny every right `abi` can express to this thread and the threads and processes it creates from now on.
    Needs no_new_privs (or CAP_SYS_ADMIN). Returns what the ruleset covers."""
    if abi < 1:
        raise LandlockUnavailable("the kernel has no landlock (or it is disabled: add 'landlock' to the lsm= boot "
                                  "parameter)")
    attr, size, covers = ruleset_for(abi)
    fd = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise LandlockUnavailable(f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise LandlockUnavailable(f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return covers
