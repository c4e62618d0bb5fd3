"""How a CLI command reaches the supervisor: the running daemon if one answers, else an embedded one."""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

from supervisor import paths
from supervisor.daemon import running_client
from supervisor.supervisor import CallResult, Supervisor


class SupervisorApi(Protocol):
    """What commands use; `Supervisor` (embedded) and `DaemonClient` both provide it."""

    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = "fresh") -> CallResult: ...

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]: ...

    def end_instance(self, name: str, instance: str) -> None: ...

    def status(self) -> list[dict]: ...


@contextlib.contextmanager
def open_supervisor() -> Iterator[SupervisorApi]:
    client = running_client(paths.runtime_dir())
    if client is not None:
        with client:
            yield client
        return
    with Supervisor() as supervisor:
        yield supervisor
