"""Worker process entry point: `run(spec_bytes)` serves one plugin's export calls until told to stop.

The worker is the untrusted side: it knows only its WorkerSpec (no secrets) and the message protocol, decides
nothing, and exits when the supervisor goes away.
"""

from __future__ import annotations

import os

from worker import protocol, sandbox
from worker.channel import SupervisorLink, SupervisorLost
from worker.engine import CallFailed, GuestRuntime


def run(spec_bytes: bytes) -> None:
    spec = protocol.decode_spec(spec_bytes)
    os.environ.clear()  # the worker needs no environment; the guest's WASI env is empty anyway
    warnings = sandbox.lock_down(spec)
    with SupervisorLink(spec.endpoint) as link:
        try:
            runtime = GuestRuntime(spec, link)
            warnings += sandbox.limit_open_files(spec.open_files_limit)
        except CallFailed as exc:
            link.send(protocol.StartFailed(token=spec.token, message=exc.message))
            return
        except Exception as exc:  # a bad artifact, an engine that rejects the config, ...
            link.send(protocol.StartFailed(
                token=spec.token, message=f"worker for plugin '{spec.plugin}' failed to start: {exc}"[:4096]))
            return
        try:
            link.send(protocol.Ready(token=spec.token, warnings=warnings[:16]))
            _serve(link, runtime)
        except SupervisorLost:
            pass
        finally:
            runtime.close()


def _serve(link: SupervisorLink, runtime: GuestRuntime) -> None:
    while not runtime.supervisor_lost:
        message = link.receive_idle()
        if isinstance(message, protocol.Invoke):
            result = runtime.invoke(message)
            if not runtime.supervisor_lost:
                link.send(result)
        elif isinstance(message, protocol.EndInstance):
            runtime.end_instance(message.instance)
        elif isinstance(message, protocol.Shutdown):
            return
        # a stale HostReply or an undecodable frame: ignore

