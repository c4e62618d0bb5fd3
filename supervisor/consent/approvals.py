"""The approvals store: `<data root>/approvals/<plugin>.json` (directory 0700, files 0600, written atomically).

Kept by the supervisor next to the registry, never in the plugin's directory (a plugin's source could ship one).
Each record is bound to the sha256 of the manifest and the wasm it was approved for (policy.grants.Approval).
`identity(name)` is one stat(), so a running host notices an approve or revoke on its next host call.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
from pathlib import Path
from typing import Iterator

import cattrs

from policy.grants import Approval
from supervisor import paths
from supervisor.atomic_file import read_no_follow, write_atomically

APPROVALS_DIR = "approvals"
MAX_RECORD_BYTES = 256 * 1024
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CONVERTER = cattrs.Converter(forbid_extra_keys=False)
_CONVERTER.register_structure_hook_func(lambda t: t == frozenset[str], lambda v, _t: frozenset(_strings(v)))
_CONVERTER.register_unstructure_hook_func(lambda t: t in (frozenset, frozenset[str]), lambda v: sorted(v))

FileIdentity = tuple[int, int, int, int] | None


class ApprovalStoreError(Exception):
    """An approval record that cannot be read or written; the plugin is then treated as not approved."""


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return value


def file_identity(path: str) -> FileIdentity:
    """(device, inode, size, mtime) of `path`, None if it does not exist: one lstat, cheap enough per host call."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def default_approvals_dir() -> Path:
    return paths.data_root() / APPROVALS_DIR


class ApprovalStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_approvals_dir()

    def _file(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ApprovalStoreError(f"Invalid plugin name {name[:80]!r}")
        return self.directory / f"{name}.json"

    def identity(self, name: str) -> FileIdentity:
        return file_identity(str(self._file(name)))

    def record_path(self, name: str) -> str:
        return str(self._file(name))

    def get(self, name: str) -> Approval | None:
        path = self._file(name)
        try:
            found = read_no_follow(path, MAX_RECORD_BYTES)
        except OSError as exc:
            raise ApprovalStoreError(f"cannot read approvals {path}: {exc.strerror}") from None
        if found is None:
            return None
        info, raw = found
        if info.st_mode & 0o022 or info.st_uid not in (0, os.getuid()):
            raise ApprovalStoreError(f"{path} is writable by others or owned by another user; it is not used "
                                     f"(remove it and run `tark plugin approve {name}`)")
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
            return _CONVERTER.structure(json.loads(raw), Approval)
        except (ValueError, TypeError, KeyError, RecursionError, cattrs.BaseValidationError) as exc:
            raise ApprovalStoreError(f"{path} is not a valid approval record ({exc}); "
                                     f"run `tark plugin approve {name}` to write a new one") from None

    def put(self, name: str, approval: Approval) -> None:
        path = self._file(name)
        record = _CONVERTER.unstructure(approval)
        record["updated_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        with self._locked():
            write_atomically(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode=0o600)

    def forget(self, name: str) -> None:
        with self._locked():
            self._file(name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
