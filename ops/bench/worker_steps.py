"""Where a worker's start time goes, step by step (docs/performance.md, "Worker start").

    .venv/bin/python -m ops.bench.worker_steps [--samples 20]

Starts real workers from a real fork server, each through an entry that times the steps of `worker.main.run`
(CPU time of the worker's main thread, so that waiting for a CPU on a loaded machine does not count) and hands the
figures back in its Ready message. Prints the median of each step. Not a report topic: it explains the
coldstart topic's figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import statistics
import time

import wasmtime
import zmq

from ops.bench.coldstart import FUNCTIONS, plugin_wat
from ops.bench.common import scratch
from supervisor.forkserver import ForkServer
from supervisor.modules import ModuleCache
from worker import protocol

MARK = "bench-steps:"


def timed_worker(spec: bytes) -> None:
    """worker.main.run with its steps timed (runs in the worker; wraps functions of this process only)."""
    import worker.channel as channel
    import worker.engine as engine
    import worker.main as main
    from worker import lockdown
    from worker.lockdown import landlock, namespaces, process, seccomp

    steps: dict[str, float] = {}
    began = time.thread_time()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def timed(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                steps[label] = steps.get(label, 0.0) + time.thread_time() - started

        setattr(owner, name, wrapper)

    for owner, name, label in [
        (process, "close_inherited_fds", "lockdown: close inherited fds"),
        (namespaces, "isolate_network", "lockdown: network (+user) namespace"),
        (landlock, "restrict_self", "lockdown: landlock"),
        (lockdown.Lockdown, "before_setup", "lockdown before set-up (all)"),
        (main, "SupervisorLink", "ZeroMQ context + socket + monitor"),
        (engine.wasmtime, "Engine", "engine"),
        (engine.abi, "define_tark_imports", "tark:* imports on the linker"),
        (engine, "EpochTicker", "epoch ticker thread"),
        (main, "GuestRuntime", "runtime (engine, module, linker, ticker)"),
        (channel.SupervisorLink, "wait_connected", "connected to the supervisor"),
        (seccomp, "install", "lockdown: seccomp"),
        (lockdown.Lockdown, "after_setup", "lockdown after set-up (all)"),
    ]:
        timed(owner, name, label)
    send = channel.SupervisorLink.send

    def send_with_steps(self: channel.SupervisorLink, message: object, **kwargs: object) -> bool:
        if isinstance(message, protocol.Ready):
            steps["total until Ready"] = time.thread_time() - began
            steps["page faults until Ready (count, not ms)"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                                                - faults) / 1000
            figures = json.dumps({k: round(v * 1000, 3) for k, v in steps.items()})
            message = protocol.Ready(token=message.token, layers=message.layers,
                                     warnings=[*message.warnings[:15], MARK + figures])
        return send(self, message, **kwargs)

    channel.SupervisorLink.send = send_with_steps
    main.run(spec)


def step_times(samples: int) -> dict[str, list[float]]:
    collected: dict[str, list[float]] = {}
    from ops.bench.worker_steps import timed_worker as entry  # by its importable name, also when run as __main__
    with scratch() as tmp:
        wasm = tmp / "steps.wasm"
        wasm.write_bytes(bytes(wasmtime.wat2wasm(plugin_wat(FUNCTIONS))))
        cache = ModuleCache(tmp / "cache")
        settings = cache.settings_for(256 * 2**20)
        server, context = ForkServer(), zmq.Context()
        try:
            for index in range(samples + 1):
                module = cache.load(wasm, "steps", settings)
                endpoint = tmp / f"steps-{index}.sock"
                socket = context.socket(zmq.ROUTER)
                socket.bind(f"ipc://{endpoint}")
                spec = protocol.WorkerSpec(plugin="steps", endpoint=f"ipc://{endpoint}", module_path=str(module.path),
                                           module_fd=protocol.MODULE_FD, engine=settings,
                                           token=secrets.token_bytes(protocol.TOKEN_BYTES))
                worker = server.start(entry, protocol.encode(spec), module.fd)
                ready = protocol.decode_from_worker(socket.recv_multipart()[1])
                worker.kill()
                worker.join()
                worker.close()
                socket.close(linger=0)
                if not isinstance(ready, protocol.Ready):
                    raise RuntimeError(f"the worker did not start: {ready!r}")
                figures = [w for w in ready.warnings if w.startswith(MARK)]
                if index and figures:  # the first start also pays for the fork server's own
                    for step, ms in json.loads(figures[0][len(MARK):]).items():
                        collected.setdefault(step, []).append(ms)
        finally:
            server.close()
            context.destroy(linger=0)
    return collected


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.worker_steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    for step, values in step_times(args.samples).items():
        if step.startswith("page faults"):
            print(f"{'minor page faults until Ready':<45} {statistics.median(values):7.0f}")
        else:
            print(f"{step:<45} {statistics.median(values):7.2f} ms CPU (median of {len(values)})")


if __name__ == "__main__":
    main()
