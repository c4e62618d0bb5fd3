"""Crash-safe file writes: a crash leaves the old content or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write `data` to a temporary file in `path`'s directory (created with `mode`, so there is no window with
    looser permissions), fsync it, rename it over `path`, and fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_no_follow(path: Path, max_bytes: int) -> tuple[os.stat_result, bytes] | None:
    """The file's status and up to `max_bytes` + 1 bytes of it (so the caller sees that it is too big), opened
    without following a symlink; None if it does not exist. The status is of the descriptor read, so the caller's
    owner and mode checks apply to exactly these bytes. OSError for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return os.fstat(handle.fileno()), handle.read(max_bytes + 1)
