"""The audit trail: every denied capability use, one JSON line in `<data root>/audit.log` (0600)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from pathlib import Path

MAX_TARGET_CHARS = 2048

_log = logging.getLogger("tark.audit")


class AuditLog:
    """Appends denial records for one plugin. Each record is a single write() with O_APPEND, so lines from
    several supervisors sharing the file do not interleave."""

    def __init__(self, path: Path, plugin: str) -> None:
        self.path = path
        self.plugin = plugin
        self._lock = threading.Lock()

    def denied(self, capability: str, target: str, reason: str) -> None:
        if len(target) > MAX_TARGET_CHARS:
            target = target[:MAX_TARGET_CHARS] + "…"
        record = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "plugin": self.plugin,
            "capability": capability,
            "target": target,
            "decision": "denied",
            "reason": reason,
        }
        _log.warning("[plugin:%s] denied %s %r: %s", self.plugin, capability, target, reason)
        line = (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")
        try:
            with self._lock:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        except OSError as exc:
            _log.error("cannot write the audit log %s: %s (fix the directory's permissions)", self.path, exc)


def read_audit(path: Path) -> list[dict]:
    """All records of an audit log, oldest first."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
