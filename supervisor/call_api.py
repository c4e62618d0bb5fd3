"""What a CLI command asks of the supervisor, whichever transport carries it (docs/performance.md, "Thin client").

The embedded `Supervisor` and the daemon's `DaemonClient` both provide `SupervisorApi`. This module is on the
thin client's path, so it imports nothing but msgspec: `CallResult` is a msgspec struct because it also
crosses the daemon's control socket.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class CallRefused(Exception):
    """A call the supervisor will not start (unknown/disabled plugin, missing export, wrong argument count)."""


class CallResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `tark plugin call` reports: the export's return code and output (None for bare status exports)."""

    plugin: str
    export: str
    ret: int | None
    output: str | None
    error: str | None
    error_kind: str | None
    worker_pid: int | None

    @property
    def ok(self) -> bool:
        return self.error is None


class SupervisorApi(Protocol):
    """What commands use; `Supervisor` (embedded) and `DaemonClient` both provide it."""

    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = "fresh") -> CallResult: ...

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]: ...

    def end_instance(self, name: str, instance: str) -> None: ...

    def status(self) -> list[dict]: ...
