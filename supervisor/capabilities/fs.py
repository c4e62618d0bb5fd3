"""tark:fs read — whole UTF-8 files the plugin's effective fs_read grants cover (policy/grants.py).

Codes (tark-core-abi.md §1.4): -1 bad path string, -2 denied, -3 read error (missing, directory, not a regular
file, too big, not UTF-8). Fixes weaknesses 16-17: relative paths are denied instead of resolving against the
supervisor's cwd, and the file opened is the one checked: the canonical path is opened with O_NOFOLLOW, the
descriptor must be a regular file and /proc/self/fd must show the same canonical path (a directory swapped for
a symlink between check and open is caught). tark's own directories and every plugin's credentials file are
refused whatever fs_read says (supervisor/oauth/private_paths.py), except the plugin's own credentials file when
its own fs_read names it; /proc, /sys and /dev only when the admin policy names the path.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Callable

import attrs

from policy.grants import EffectiveGrants, FsReadAccess
from policy.limits import Limits
from supervisor.capabilities.audit import AuditLog
from supervisor.capabilities.outcome import DENIED, FAILED, READ_ERROR, Outcome
from supervisor.oauth.private_paths import private_paths

MAX_PATH_BYTES = 4096
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


@attrs.frozen
class FsConfig:
    grants: Callable[[], EffectiveGrants]  # the plugin's current effective grants (policy/grants.py)
    home: str
    max_file_bytes: int
    max_result_bytes: int
    private: Callable[[], tuple[str, ...]] = private_paths
    own_credentials: Callable[[], str | None] = lambda: None  # canonical path of the plugin's credentials file

    @classmethod
    def derive(cls, grants: Callable[[], EffectiveGrants], home: str, limits: Limits,
               own_credentials: Callable[[], str | None] = lambda: None) -> "FsConfig":
        return cls(grants=grants, home=home, max_file_bytes=limits.fs_max_file_bytes,
                   max_result_bytes=limits.max_result_bytes, own_credentials=own_credentials)


def expand_home(path: str, home: str) -> str:
    if path == "~" or path.startswith("~/"):
        return home.rstrip("/") + path[1:]
    return path


def _resolve_pattern(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return path


class FsCapability:
    def __init__(self, config: FsConfig, audit: AuditLog, log: logging.Logger) -> None:
        self.config = config
        self._audit = audit
        self._log = log

    def read(self, path: str) -> Outcome:
        if not path or "\x00" in path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
            return Outcome(FAILED)
        expanded = expand_home(path, self.config.home)
        if not expanded.startswith("/"):
            self._audit.denied("fs_read", path, "relative paths are not allowed; give an absolute or ~/ path")
            return Outcome(DENIED)
        try:
            canonical = os.path.realpath(expanded)
        except OSError as exc:  # a component changed while it was being resolved
            self._log.info("fs.read %s: %s", expanded, exc.strerror or exc)
            return Outcome(READ_ERROR)
        decision = self.config.grants().check(FsReadAccess(
            canonical, self.config.home, _resolve_pattern, private=self.config.private(),
            own_credentials=self.config.own_credentials()))
        if not decision.allowed:
            self._audit.denied("fs_read", canonical if canonical == path else f"{path} -> {canonical}",
                               decision.reason)
            return Outcome(DENIED)
        self._audit.allowed("fs_read", canonical, decision.reason)
        try:
            fd = os.open(canonical, _OPEN_FLAGS)
        except OSError as exc:
            self._log.info("fs.read %s: %s", canonical, exc.strerror)
            return Outcome(READ_ERROR)
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
            if opened != canonical:
                self._audit.denied("fs_read", canonical, f"the path changed while it was opened (now {opened})")
                return Outcome(DENIED)
            return self._read_regular(fd, canonical)
        except OSError as exc:
            self._log.info("fs.read %s: %s", canonical, exc.strerror or exc)
            return Outcome(READ_ERROR)
        finally:
            os.close(fd)

    def _read_regular(self, fd: int, canonical: str) -> Outcome:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            self._log.info("fs.read %s: not a regular file", canonical)
            return Outcome(READ_ERROR)
        cap = min(self.config.max_file_bytes, self.config.max_result_bytes)
        if info.st_size > cap:
            self._log.warning("fs.read %s: %d bytes exceed the %d-byte limit", canonical, info.st_size, cap)
            return Outcome(READ_ERROR)
        chunks, total = [], 0
        while total <= cap:
            chunk = os.read(fd, cap + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:
            self._log.warning("fs.read %s: grew beyond the %d-byte limit while being read", canonical, cap)
            return Outcome(READ_ERROR)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self._log.info("fs.read %s: not valid UTF-8", canonical)
            return Outcome(READ_ERROR)
        return Outcome.written(data)
