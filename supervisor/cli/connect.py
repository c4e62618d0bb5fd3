"""How a CLI command reaches the supervisor: one code path, two transports.

A running daemon answers on its control socket (supervisor/control_client.py, standard library and msgspec
only); without one, the supervisor runs embedded in this process. Only the embedded transport imports the
runtime (wasmtime, the capability modules, httpx, jsonschema), so a command that forwards to the daemon starts
in tens of milliseconds (docs/performance.md, "Thin client").
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from supervisor import paths
from supervisor.call_api import SupervisorApi
from supervisor.control_client import running_client

__all__ = ["SupervisorApi", "open_supervisor"]


@contextlib.contextmanager
def open_supervisor() -> Iterator[SupervisorApi]:
    client = running_client(paths.runtime_dir())
    if client is not None:
        with client:
            yield client
        return
    from supervisor.supervisor import Supervisor  # the embedded transport: the whole runtime, imported on demand

    with Supervisor() as supervisor:
        from supervisor.cli.progress import compile_status  # rich only when a command runs embedded

        supervisor.modules.on_compile = compile_status
        yield supervisor
