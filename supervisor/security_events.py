"""Integrity events about workers into the audit trail: a forged message on a worker's endpoint, a worker speaking
outside a call, a tampered module cache entry (docs/security.md). Each plugin gets its own AuditLog, so a noisy one
is rate-limited on its own; every event is also logged as a warning."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from supervisor.capabilities.audit import AuditLog

log = logging.getLogger("tark.security")


class SecurityAudit:
    def __init__(self, audit_path: Path) -> None:
        self._path = audit_path
        self._logs: dict[str | None, AuditLog] = {}
        self._lock = threading.Lock()

    def __call__(self, plugin: str | None, kind: str, fields: dict[str, Any]) -> None:
        """`plugin` None: an event of the supervisor itself (a refused control connection)."""
        log.warning("security event %s for plugin %s: %s", kind, plugin, fields)
        with self._lock:
            audit = self._logs.get(plugin)
            if audit is None:
                audit = self._logs[plugin] = AuditLog(self._path, plugin)
        audit.event(kind, **fields)

    def close(self) -> None:
        with self._lock:
            logs, self._logs = list(self._logs.values()), {}
        for audit in logs:
            audit.close()
