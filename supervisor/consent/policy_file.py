"""Loading the admin policy: `/etc/tark/policy.toml`, or (only when that does not exist) the file `$TARK_POLICY`
names. A malformed file, one writable by anyone but its owner, or one owned by another non-root user fails closed:
`current()` raises AdminPolicyError and every plugin is refused with its message. The file is re-read when its
identity (inode, size, mtime) changes, so a running daemon applies an edit on the next host call or command.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Callable, Mapping

from policy.admin_policy import MAX_POLICY_BYTES, AdminPolicy, AdminPolicyError, parse_admin_policy

SYSTEM_POLICY = Path("/etc/tark/policy.toml")
PolicyIdentity = tuple


def policy_path(environ: Mapping[str, str] | None = None, system: Path = SYSTEM_POLICY) -> Path | None:
    """The policy file in force, None when there is none. The system file wins: a user's TARK_POLICY cannot
    replace what the administrator installed."""
    if os.path.lexists(system):
        return system
    named = (os.environ if environ is None else environ).get("TARK_POLICY")
    return Path(named) if named else None


def _policy_path_text() -> str | None:
    """policy_path() as text, without building Path objects (asked on every host call)."""
    try:
        os.lstat(_SYSTEM_TEXT)
        return _SYSTEM_TEXT
    except FileNotFoundError:
        return os.environ.get("TARK_POLICY") or None


_SYSTEM_TEXT = str(SYSTEM_POLICY)


def read_policy_file(path: Path) -> AdminPolicy:
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise AdminPolicyError(source, "", "the admin policy file does not exist (TARK_POLICY names it); "
                                           "create it or unset TARK_POLICY") from None
    except OSError as exc:
        raise AdminPolicyError(source, "", f"cannot read the admin policy: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AdminPolicyError(source, "", "not a regular file")
        if info.st_mode & 0o022:
            raise AdminPolicyError(source, "", f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
                                               "anyone could widen it, so it is refused: chmod go-w it")
        if info.st_uid not in (0, os.getuid()):
            raise AdminPolicyError(source, "", f"owned by uid {info.st_uid}, neither root nor this user; refused")
        data = handle.read(MAX_POLICY_BYTES + 1)
    return parse_admin_policy(data, source)


class PolicyLoader:
    """The current admin policy, cached by file identity. Thread-safe."""

    def __init__(self, path: Callable[[], Path | str | None] = _policy_path_text,
                 on_load: Callable[[AdminPolicy | None, str | None], None] | None = None) -> None:
        self._path = path
        self._on_load = on_load
        self._lock = threading.Lock()
        self._key: PolicyIdentity | None = None
        self._policy: AdminPolicy | None = None
        self._error: AdminPolicyError | None = None

    def identity(self) -> PolicyIdentity:
        """Which file is in force and its (device, inode, size, mtime, mode, owner): two stat calls."""
        path = self._path()
        if path is None:
            return (None,)
        try:
            st = os.stat(path)
        except OSError as exc:
            return (path, exc.errno)
        return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid)

    def current(self) -> AdminPolicy:
        key = self.identity()
        with self._lock:
            if key != self._key:
                path = self._path()
                try:
                    self._policy, self._error = (read_policy_file(Path(path)) if path else AdminPolicy()), None
                except AdminPolicyError as exc:
                    self._policy, self._error = None, exc
                self._key = key
                if self._on_load is not None and path is not None:
                    self._on_load(self._policy, str(self._error) if self._error else None)
            if self._error is not None:
                raise self._error
            assert self._policy is not None
            return self._policy
