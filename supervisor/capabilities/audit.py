"""The audit trail: every capability decision (allowed and denied) and every consent or integrity event, as JSON
lines in `<data root>/audit.log` (0600), rotated by size, rate-limited per plugin. See docs/secrets-and-audit.md.

Record shapes (one JSON object per line, ASCII only):
  decision    {"time", "plugin", "kind": "decision", "decision": "allowed"|"denied", "capability", "target", "reason"}
  event       {"time", "plugin", "kind": <event kind>, ...fields}     (approval, revocation, policy_load, ...)
  suppressed  {"time", "plugin", "kind": "suppressed", "seconds", "counts": [{"decision", "capability", "count"}]}

Bounds:
  - Size: when a write would take `audit.log` past `max_bytes` it is renamed to `audit.log.1` (`.1` to `.2`, ...,
    `keep` files kept), so the trail never takes more than about (keep + 1) * max_bytes.
  - Rate: each plugin has a token bucket per class (allowed, denied, event). A record over the rate is not
    written but counted; the counts are written as one "suppressed" record (and one warning line) at most
    every `flush_seconds`, and at close. Nothing is dropped without being counted.
  - Cost: allowed records (one per storage get, env get, ...) are buffered and written in batches, at most
    `flush_seconds` or `flush_records` late; denied records and events are written at once (with anything
    buffered before them, so the file stays in order).
Writers in several processes share the file: each batch is one write() with O_APPEND under an flock, and a
writer that finds the file rotated under it reopens the new one.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import attrs

from policy.rate import TokenBucket
from policy.text import escape_control
from supervisor import paths

AUDIT_FILE = "audit.log"
MAX_TARGET_CHARS = 2048
MAX_REASON_CHARS = 1024
MAX_FIELD_CHARS = 2048
ALLOWED, DENIED, EVENT = "allowed", "denied", "event"

_log = logging.getLogger("tark.audit")


@attrs.frozen
class AuditSettings:
    max_bytes: int = 8 * 1024 * 1024
    keep: int = 4
    denied_per_second: float = 20.0
    denied_burst: int = 200
    allowed_per_second: float = 500.0
    allowed_burst: int = 5000
    events_per_second: float = 20.0
    events_burst: int = 200
    flush_seconds: float = 1.0
    flush_records: int = 512

    def bucket(self, klass: str) -> tuple[float, int]:
        if klass == ALLOWED:
            return self.allowed_per_second, self.allowed_burst
        if klass == DENIED:
            return self.denied_per_second, self.denied_burst
        return self.events_per_second, self.events_burst


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


class AuditLog:
    """The audit trail of one plugin (or of the supervisor itself, `plugin=None`), appended to `path`.

    Thread-safe. `close()` writes what is buffered and the pending suppression counts; call it when the
    plugin's host closes.
    """

    def __init__(self, path: Path, plugin: str | None = None, settings: AuditSettings = AuditSettings(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.plugin = plugin
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets = {klass: TokenBucket(*settings.bucket(klass), clock) for klass in (ALLOWED, DENIED, EVENT)}
        self._pending: list[str] = []
        self._suppressed: dict[tuple[str, str], int] = {}
        self._suppressed_since = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False
        self._dir_ready = False

    # ------------------------------------------------------------------------------------------ recording

    def allowed(self, capability: str, target: str, reason: str = "") -> None:
        """A capability use the policy allowed. Cheap: buffered, and counted instead of written when over rate."""
        now = self._clock()
        with self._lock:
            if not self._buckets[ALLOWED].take():
                self._count(ALLOWED, capability, now)
                return
            self._pending.append(self._decision_line(ALLOWED, capability, target, reason))
            if self._closed or len(self._pending) >= self.settings.flush_records:
                self._flush_locked()
            else:
                self._arm_timer()

    def denied(self, capability: str, target: str, reason: str) -> None:
        """A capability use the policy refused: written at once, and one warning line (both rate-limited)."""
        now = self._clock()
        with self._lock:
            if not self._buckets[DENIED].take():
                self._count(DENIED, capability, now)
                return
            self._pending.append(self._decision_line(DENIED, capability, target, reason))
            self._flush_locked()
        _log.warning("[plugin:%s] denied %s '%s': %s", self.plugin or "-", capability,
                     escape_control(_clip(target, MAX_TARGET_CHARS)), escape_control(_clip(reason, MAX_REASON_CHARS)))

    def event(self, kind: str, **fields: Any) -> None:
        """A consent or integrity event (approval, revocation, policy_load, pin_refused, invalid_worker_message, ...).

        Fields must be JSON-serialisable and must never hold a secret's value (name the key instead)."""
        now = self._clock()
        with self._lock:
            if not self._buckets[EVENT].take():
                self._count(EVENT, kind, now)
                return
            record: dict[str, Any] = {"time": _now_iso(), "plugin": self.plugin, "kind": kind}
            for key, value in fields.items():
                if key not in record:
                    record[key] = _clip(value, MAX_FIELD_CHARS) if isinstance(value, str) else value
            self._pending.append(json.dumps(record, ensure_ascii=True, default=str) + "\n")
            self._flush_locked()

    def flush(self) -> None:
        """Write buffered records and any pending suppression summary now."""
        with self._lock:
            self._summarise_locked()
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            self._summarise_locked()
            self._flush_locked()
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()

    # ------------------------------------------------------------------------------------------ internals

    def _decision_line(self, decision: str, capability: str, target: str, reason: str) -> str:
        record = {"time": _now_iso(), "plugin": self.plugin, "kind": "decision", "decision": decision,
                  "capability": capability, "target": _clip(target, MAX_TARGET_CHARS),
                  "reason": _clip(reason, MAX_REASON_CHARS)}
        return json.dumps(record, ensure_ascii=True) + "\n"

    def _count(self, klass: str, name: str, now: float) -> None:
        if not self._suppressed:
            self._suppressed_since = now
        key = (klass, name)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = threading.Timer(self.settings.flush_seconds, self._on_timer)
            self._timer.daemon = True
            self._timer.name = f"audit-flush-{self.plugin or 'supervisor'}"
            self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # closed (or replaced) meanwhile
            self._timer = None
            self._summarise_locked()
            self._flush_locked()

    def _summarise_locked(self) -> None:
        if not self._suppressed:
            return
        counts, self._suppressed = self._suppressed, {}
        seconds = round(max(self._clock() - self._suppressed_since, 0.0), 3)
        record = {"time": _now_iso(), "plugin": self.plugin, "kind": "suppressed", "seconds": seconds,
                  "counts": [{"decision": klass, "capability": name, "count": n}
                             for (klass, name), n in sorted(counts.items())]}
        self._pending.append(json.dumps(record, ensure_ascii=True) + "\n")
        for (klass, name), n in sorted(counts.items()):
            level = logging.DEBUG if klass == ALLOWED else logging.WARNING
            _log.log(level, "[plugin:%s] suppressed %d %s %s records in the last %.1f s (audit rate limit)",
                     self.plugin or "-", n, klass, name, seconds)

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("ascii")
        self._pending = []
        try:
            self._append(data)
        except OSError as exc:
            _log.error("cannot write the audit log %s: %s (fix the directory's permissions)", self.path, exc)

    def _append(self, data: bytes) -> None:
        if not self._dir_ready:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir_ready = True
        for _ in range(8):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                opened = os.fstat(fd)
                try:
                    current = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # rotated away between open and lock: open the new file
                if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                    continue
                if opened.st_size > 0 and opened.st_size + len(data) > self.settings.max_bytes:
                    self._rotate()
                    continue
                os.write(fd, data)
                return
            finally:
                os.close(fd)
        raise OSError(errno.EAGAIN, "the audit log kept changing under this writer")

    def _rotate(self) -> None:
        """Called with the current file's lock held: shift audit.log.N-1 -> .N ... audit.log -> .1."""
        keep = max(self.settings.keep, 1)
        for index in range(keep - 1, 0, -1):
            older = rotated_path(self.path, index)
            if older.exists():
                os.replace(older, rotated_path(self.path, index + 1))
        os.replace(self.path, rotated_path(self.path, 1))


# ---------------------------------------------------------------------------------------------- reading


def default_audit_path() -> Path:
    return paths.data_root() / AUDIT_FILE


def rotated_path(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def audit_files(path: Path) -> list[Path]:
    """The current file and its rotated predecessors that exist, oldest first."""
    rotated = []
    index = 1
    while rotated_path(path, index).exists():
        rotated.append(rotated_path(path, index))
        index += 1
    return [*reversed(rotated), *([path] if path.exists() else [])]


def _records(path: Path) -> Iterator[dict]:
    try:
        handle = path.open("r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn line (disk full); the rest of the file is still readable
            if isinstance(record, dict):
                yield record


def read_audit(path: Path, *, decision: str | None = None) -> list[dict]:
    """The records of one audit file, oldest first; `decision` keeps only "allowed" or "denied" decisions."""
    return [r for r in _records(path) if decision is None or r.get("decision") == decision]


def read_audit_trail(path: Path) -> Iterable[dict]:
    """Every record of the current and rotated files, oldest first."""
    for file in audit_files(path):
        yield from _records(file)
