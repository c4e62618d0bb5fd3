"""Locks a worker down before it runs guest code, in a fixed order (docs/security.md, "Lockdown").

`Lockdown.before_setup` runs right after the fork, while the worker is still single-threaded:
  close inherited fds -> network (+ user) namespace -> empty capability bounding set -> no_new_privs ->
  rlimits (CORE 0, FSIZE 0, AS from the engine's reservation, NPROC with an own uid) -> landlock.
Landlock comes before any thread exists because it binds only the calling thread and its future threads; the
worker's endpoint (a unix socket path, which landlock ABI <= 7 does not mediate) and its module (an already open
memfd) stay reachable.
`Lockdown.after_setup` runs once the ZeroMQ connection is up and the module is loaded:
  own uid (root supervisors) -> non-dumpable -> RLIMIT_NOFILE -> seccomp allow-list (all threads).

Each layer is detected and reported: `active` names what holds (sent to the supervisor in Ready, shown by
`tark supervisor status`), `warnings` says what is missing and why. `unavailable` makes the worker treat layers as
missing from the kernel: the degradation tests use it; the supervisor never sets it.
"""

from __future__ import annotations

import codecs
import os
from typing import Callable, Iterable

from worker import protocol
from worker.lockdown import credentials, landlock, namespaces, process, seccomp
from worker.lockdown.process import LayerFailed

LAYERS = ("nnp", "rlimits", "netns", "userns", "landlock", "uid", "nodump", "seccomp")
# Codecs are imported on first use, which landlock forbids: load the ones the worker can reach now (json.loads on
# bytes picks a UTF-16/32 codec from the first bytes).
PRELOADED_CODECS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-16-le", "utf-32", "utf-32-be", "utf-32-le",
                    "ascii", "latin-1")
_NPROC_WITH_OWN_UID = 64  # threads count too: the ZeroMQ I/O thread, the epoch ticker, wasmtime's


class Lockdown:
    def __init__(self, spec: protocol.WorkerSpec, unavailable: Iterable[str] = ()) -> None:
        self.spec = spec
        self.unavailable = frozenset(unavailable)
        self.active: list[str] = []
        self.warnings: list[str] = []

    def before_setup(self) -> None:
        spec = self.spec
        process.close_inherited_fds((0, 1, 2) if spec.module_fd is None else (0, 1, 2, spec.module_fd))
        self._layer("netns", namespaces.isolate_network, reports=True)
        if spec.run_as_uid is not None:
            self._step("uid", credentials.drop_bounding_set)
        self._layer("nnp", process.no_new_privs)
        self._layer("rlimits", self._rlimits)
        for name in PRELOADED_CODECS:
            codecs.lookup(name)
        self._layer("landlock", self._landlock, reports=True)

    def after_setup(self) -> None:
        if self.spec.run_as_uid is not None and "uid" not in self.unavailable:
            self._layer("uid", lambda: credentials.become(self.spec.run_as_uid))
        self._layer("nodump", process.non_dumpable)
        self._step("rlimits", lambda: process.set_limit("RLIMIT_NOFILE", self.spec.open_files_limit))
        self._layer("seccomp", seccomp.install)

    # ------------------------------------------------------------------ layers

    def _rlimits(self) -> None:
        spec = self.spec
        process.set_limit("RLIMIT_CORE", 0)
        process.no_file_writes()
        if spec.run_as_uid is not None:  # NPROC counts per uid: only a uid of its own can be capped this low
            process.set_limit("RLIMIT_NPROC", _NPROC_WITH_OWN_UID)
        if spec.os_memory_limit_bytes is not None:
            reserved = spec.engine.memory_reservation + spec.engine.memory_guard_size
            if reserved > spec.os_memory_limit_bytes // 4:
                self.warnings.append(f"RLIMIT_AS of {spec.os_memory_limit_bytes} bytes not applied: the engine "
                                     f"reserves {reserved} bytes of address space per linear memory")
            else:
                process.set_limit("RLIMIT_AS", spec.os_memory_limit_bytes)

    def _landlock(self) -> list[str]:
        abi = 0 if "landlock" in self.unavailable else landlock.abi_version()
        covers = landlock.restrict_self(abi)
        missing = {"tcp": "TCP (ABI 4)", "signals": "signal scoping (ABI 6)", "abstract-unix": "abstract unix "
                   "socket scoping (ABI 6)"}
        for key, what in missing.items():
            if key not in covers:
                self.warnings.append(f"landlock ABI {abi} cannot restrict {what}")
        return ["landlock"]

    # ------------------------------------------------------------------ bookkeeping

    def _layer(self, name: str, apply: Callable[[], object], *, reports: bool = False) -> None:
        if name in self.unavailable or (name == "netns" and "userns" in self.unavailable and os.geteuid() != 0):
            self.warnings.append(f"sandbox layer '{name}' is not available on this kernel; running without it")
            return
        try:
            result = apply()
        except (LayerFailed, landlock.LandlockUnavailable) as exc:
            self.warnings.append(f"sandbox layer '{name}' not applied: {exc}")
            return
        self.active += list(result) if reports else [name]

    def _step(self, name: str, apply: Callable[[], None]) -> None:
        """A part of a layer that does not make it active by itself; failures are still reported."""
        try:
            apply()
        except LayerFailed as exc:
            self.warnings.append(f"sandbox layer '{name}': {exc}")
