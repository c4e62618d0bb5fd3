"""Worker process entry point: `run(spec_bytes)` serves one plugin's export calls until told to stop.

The worker is the untrusted side: it knows only its WorkerSpec (no secrets) and the message protocol, decides
nothing, and exits when the supervisor goes away.
"""

from __future__ import annotations

import os
from typing import Iterable

import msgspec

from worker import protocol
from worker.channel import SupervisorLink, SupervisorLost
from worker.component import ComponentRuntime
from worker.engine import CallFailed, GuestRuntime
from worker.lockdown import Lockdown

CONNECT_TIMEOUT_S = 5.0


def run(spec_bytes: bytes, unavailable: Iterable[str] = ()) -> None:
    """`unavailable`: sandbox layers to treat as missing from the kernel (the degradation tests' entry points)."""
    spec = _with_module_fd(protocol.decode_spec(spec_bytes))
    os.environ.clear()  # the worker needs no environment; the guest's WASI env is empty anyway
    lockdown = Lockdown(spec, unavailable)
    lockdown.before_setup()
    with SupervisorLink(spec.endpoint) as link:
        try:
            runtime = (ComponentRuntime if spec.component else GuestRuntime)(spec, link)
            link.wait_connected(CONNECT_TIMEOUT_S)  # an own uid could not reach the endpoint afterwards
            lockdown.after_setup()
        except CallFailed as exc:
            link.send(protocol.StartFailed(token=spec.token, message=exc.message))
            return
        except Exception as exc:  # a bad artifact, an engine that rejects the config, ...
            link.send(protocol.StartFailed(
                token=spec.token, message=f"worker for plugin '{spec.plugin}' failed to start: {exc}"[:4096]))
            return
        try:
            link.send(protocol.Ready(token=spec.token, layers=lockdown.active, warnings=lockdown.warnings[:16]))
            _serve(link, runtime)
        except SupervisorLost:
            pass
        finally:
            runtime.close()


def _with_module_fd(spec: protocol.WorkerSpec) -> protocol.WorkerSpec:
    """A spec naming its module by path only (tests, tools) gets it copied into a memfd now: under landlock no
    path opens, not even /proc/self/fd/N of a file opened before."""
    if spec.module_fd is not None:
        return spec
    try:
        with open(spec.module_path, "rb") as file:
            data = file.read()
    except OSError:
        return spec  # the engine reports the missing module in StartFailed
    fd = os.memfd_create("module", os.MFD_CLOEXEC)
    os.write(fd, data)
    return msgspec.structs.replace(spec, module_fd=fd)


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

