"""The seccomp-bpf allow-list (docs/security.md, "seccomp"): the system calls a set-up worker needs to run wasm
with wasmtime, CPython and ZeroMQ's ipc transport. Everything else fails with EPERM: execve, ptrace,
process_vm_*, fork, mount, bpf, keyctl, unshare/setns, perf_event_open, io_uring, userfaultfd, ...; and a syscall
of another architecture's ABI kills the process (libseccomp's default for a foreign arch).

The list was taken from traces of workers running the test suite (every capability, channel instances, traps,
memory growth), plus harmless neighbours of what they used (clock_nanosleep beside nanosleep, ...). Loaded with
TSYNC so the ZeroMQ and ticker threads that already exist get it too.

Compiling the list with libseccomp costs milliseconds, so the fork server compiles it once (`compiled()`, before
it forks) and each worker only patches its own pid into the two signal rules and loads the finished BPF program
with seccomp(2) (docs/performance.md, "Worker start"). The program is libseccomp's own output, byte for byte.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import socket
import struct

from worker.lockdown.process import LayerFailed

try:  # imported with the worker's code: after landlock no module file can be opened
    import pyseccomp as _seccomp
    _IMPORT_ERROR = None
except (ImportError, OSError) as exc:  # no libseccomp.so.2 on this machine
    _seccomp, _IMPORT_ERROR = None, exc

ALLOWED = (
    # memory
    "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "membarrier", "mincore",
    # descriptors the worker already holds (landlock refuses any new path)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close", "close_range", "dup", "dup2",
    "dup3", "fcntl", "fstat", "newfstatat", "statx", "openat", "getdents64", "pipe2", "eventfd2", "fsync",
    "fdatasync", "ftruncate", "getcwd",
    # waiting
    "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
    "epoll_pwait2", "futex", "futex_waitv", "nanosleep", "clock_nanosleep", "sched_yield",
    # unix sockets already connected (socket() itself is limited to AF_UNIX below)
    "connect", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockopt", "setsockopt", "getsockname",
    "getpeername",
    # time, identity, randomness
    "clock_gettime", "clock_getres", "gettimeofday", "getrandom", "getpid", "gettid", "getppid", "getuid",
    "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "uname", "getrusage", "times",
    "sysinfo", "prlimit64", "getrlimit",
    # signals (wasmtime traps through SIGSEGV/SIGILL handlers), threads, scheduling
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "restart_syscall",
    "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "arch_prctl", "sched_getaffinity",
    "sched_getparam", "sched_getscheduler", "sched_setscheduler", "exit", "exit_group",
)

_PR_SET_NAME, _PR_GET_NAME, _PR_GET_DUMPABLE, _PR_SET_VMA = 15, 16, 3, 0x53564D41
_TCGETS, _FIONBIO, _FIOCLEX = 0x5401, 0x5421, 0x5451
_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 \
    | 0x00000080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME


# Stands for the worker's pid in the compiled program: above any pid (pid_max <= 2**22), so it can only be ours.
_PID_PLACEHOLDER = 0x7A3C4B1D
_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def install() -> None:
    """Load the filter for every thread of this process. Needs no_new_privs (set earlier)."""
    program = compiled()
    number = _SYS_SECCOMP.get(platform.machine())
    if program is None or number is None:  # no pid slot found, or an architecture we have no number for
        try:
            _build(os.getpid()).load()
        except OSError as exc:
            raise LayerFailed(f"seccomp filter not loaded: {exc}") from None
        return
    patched = _with_pid(program, os.getpid())
    fprog = _SockFprog(len(patched) // _INSTRUCTION.size, patched)
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                           ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if result != 0:  # -1 with errno, or the id of a thread that could not be synchronised
        reason = os.strerror(ctypes.get_errno()) if result < 0 else f"thread {result} could not take it"
        raise LayerFailed(f"seccomp filter not loaded: {reason}")


@functools.cache
def compiled() -> bytes | None:
    """The allow-list as a BPF program with _PID_PLACEHOLDER for the pid, or None if the pid does not land in
    separate instruction constants (then each worker compiles its own). Cached: the fork server calls it before
    forking. Compiled for two placeholders: the programs must differ exactly in the instructions holding them."""
    try:
        program, other = _export(_build(_PID_PLACEHOLDER)), _export(_build(_PID_PLACEHOLDER + 1))
    except OSError:
        return None
    if not program or len(program) % _INSTRUCTION.size or len(program) != len(other):
        return None
    for ours, theirs in zip(_INSTRUCTION.iter_unpack(program), _INSTRUCTION.iter_unpack(other)):
        if ours != theirs and (ours[:3] != theirs[:3] or (ours[3], theirs[3]) != (_PID_PLACEHOLDER,
                                                                                   _PID_PLACEHOLDER + 1)):
            return None
    return program if program != other else None


def _export(sf) -> bytes:
    memfd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(memfd), "wb") as file:
            sf.export_bpf(file)
        return os.pread(memfd, 1 << 20, 0)
    finally:
        os.close(memfd)


def _with_pid(program: bytes, pid: int) -> bytes:
    out = bytearray(program)
    for index, (code, jt, jf, k) in enumerate(_INSTRUCTION.iter_unpack(program)):
        if k == _PID_PLACEHOLDER:
            _INSTRUCTION.pack_into(out, index * _INSTRUCTION.size, code, jt, jf, pid)
    return bytes(out)


def _build(pid: int):
    """The allow-list as a libseccomp filter whose signal rules name `pid`."""
    seccomp = _seccomp
    if seccomp is None:
        raise LayerFailed(f"seccomp unavailable: libseccomp cannot be loaded ({_IMPORT_ERROR})")
    try:
        sf = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
        sf.set_attr(seccomp.Attr.CTL_TSYNC, 1)
        for name in ALLOWED:
            _allow(sf, seccomp, name)
        sf.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX))
        sf.add_rule(seccomp.ALLOW, "socketpair", seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX))
        for option in (_PR_SET_NAME, _PR_GET_NAME, _PR_GET_DUMPABLE, _PR_SET_VMA):
            sf.add_rule(seccomp.ALLOW, "prctl", seccomp.Arg(0, seccomp.EQ, option))
        for request in (_TCGETS, _FIONBIO, _FIOCLEX):
            sf.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.EQ, request))
        # Threads only: clone must carry CLONE_THREAD and no namespace flag; clone3 hides its flags behind a
        # pointer, so it reports ENOSYS and glibc falls back to clone.
        sf.add_rule(seccomp.ALLOW, "clone",
                    seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD | _CLONE_NAMESPACES, _CLONE_THREAD))
        sf.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        # Signals only to this process's own threads.
        sf.add_rule(seccomp.ALLOW, "tgkill", seccomp.Arg(0, seccomp.EQ, pid))
        sf.add_rule(seccomp.ALLOW, "kill", seccomp.Arg(0, seccomp.EQ, pid))
    except OSError as exc:
        raise LayerFailed(f"seccomp filter not built: {exc}") from None
    return sf


def _allow(sf: object, seccomp: object, name: str) -> None:
    try:
        sf.add_rule(seccomp.ALLOW, name)  # type: ignore[attr-defined]
    except (OSError, ValueError):  # a name this architecture does not have (e.g. select on arm64)
        pass
