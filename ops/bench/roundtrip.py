"""Round-trip costs of the worker path, next to raw pyzmq measured in the same run.

    .venv/bin/python ops/bench/roundtrip.py [--calls 2000]

Prints medians (µs) of: one host call guest->worker->supervisor->worker->guest (a guest export making N
env.get calls, per call), one no-op export call, a raw pyzmq DEALER/ROUTER request/reply over ipc with the same
payload sizes, worker cold start (warm module cache, preloaded fork server), and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from supervisor.modules import ModuleCache  # noqa: E402
from supervisor.plugin import load_plugin_dir  # noqa: E402
from supervisor.workers import WorkerPool  # noqa: E402
from worker import protocol  # noqa: E402

HOST_CALLS_PER_EXPORT = 200
WAT = """
(module
  (import "tark:env" "get" (func $env_get (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "BENCH_VAR")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "noop") (result i32) (i32.const 0))
  (func (export "env_calls") (param $n i32) (result i32)
    (loop $l
      (drop (call $env_get (i32.const 16) (i32.const 9) (i32.const 4096)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))
    (i32.const 0))
  (func (export "env_loop") (result i32) (call 3 (i32.const %d)))
)
""" % HOST_CALLS_PER_EXPORT


class EnvHost:
    """A minimal real host: answers env.get with a fixed 64-byte value."""

    VALUE = b"v" * 64

    def handle(self, request: protocol.HostRequest) -> protocol.HostReply:
        return protocol.HostReply(host_call_id=request.host_call_id, code=0, data=self.VALUE)

    def on_log(self, message: object) -> None:
        pass

    def close(self) -> None:
        pass


def raw_zmq_round_trip(endpoint: str, request: bytes, reply: bytes, n: int) -> list[float]:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    ready = threading.Event()

    def echo_peer() -> None:
        dealer = context.socket(zmq.DEALER)
        dealer.connect(endpoint)
        ready.set()
        dealer.send(b"hello")
        for _ in range(n):
            dealer.send(request)
            dealer.recv()
        dealer.close(linger=0)

    # the peer runs in a separate process in our pool; here a thread: the GIL makes this a lower bound
    peer = threading.Thread(target=echo_peer)
    peer.start()
    ready.wait()
    ident, _ = router.recv_multipart()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        router.recv_multipart()
        router.send_multipart([ident, reply])
        times.append(time.perf_counter() - t)
    peer.join()
    router.close(linger=0)
    context.term()
    return times


def raw_zmq_process_round_trip(endpoint: str, request: bytes, reply: bytes, n: int) -> list[float]:
    """Raw DEALER (in a forkserver child) <-> ROUTER: the same shape as a host call, nothing else."""
    import multiprocess

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    process = multiprocess.get_context("forkserver").Process(target=_dealer_child, args=(endpoint, request, n))
    process.start()
    ident, _ = router.recv_multipart()
    for _ in range(n):
        router.recv_multipart()
        router.send_multipart([ident, reply])
    _, blob = router.recv_multipart()
    process.join()
    router.close(linger=0)
    context.term()
    return [float(x) for x in blob.decode().split(",")]


def _dealer_child(endpoint: str, request: bytes, n: int) -> None:
    import time as _time

    import zmq as _zmq

    context = _zmq.Context()
    dealer = context.socket(_zmq.DEALER)
    dealer.connect(endpoint)
    dealer.send(b"hello")
    times = []
    for _ in range(n):
        t = _time.perf_counter()
        dealer.send(request)
        dealer.recv()
        times.append(_time.perf_counter() - t)
    dealer.send(",".join(f"{x:.9f}" for x in times).encode())
    dealer.close(linger=1000)
    context.term()


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    import wasmtime

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plugin_dir = tmp / "bench"
        plugin_dir.mkdir()
        (plugin_dir / "plugin.toml").write_text('[plugin]\nname = "bench"\nversion = "0.1.0"\ntype = "tool"\n')
        (plugin_dir / "plugin.wasm").write_bytes(bytes(wasmtime.wat2wasm(WAT)))
        plugin = load_plugin_dir(plugin_dir)
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        cache = ModuleCache(tmp / "cache")
        with WorkerPool(runtime, cache, lambda p: EnvHost()) as pool:
            pool.call(plugin, "noop", [], None).raise_for_error()  # fork server + module cache warm
            starts = []
            for _ in range(20):
                pool.stop(plugin.name)
                t = time.perf_counter()
                pool.call(plugin, "noop", [], None).raise_for_error()
                starts.append(time.perf_counter() - t)
            noop = []
            for _ in range(args.calls):
                t = time.perf_counter()
                pool.call(plugin, "noop", [], None)
                noop.append(time.perf_counter() - t)
            host = []
            for _ in range(max(10, args.calls // HOST_CALLS_PER_EXPORT)):
                t = time.perf_counter()
                pool.call(plugin, "env_loop", [], None).raise_for_error()
                host.append((time.perf_counter() - t) / HOST_CALLS_PER_EXPORT)
        request = protocol.encode(protocol.EnvGet(host_call_id=1, name="BENCH_VAR"))
        reply = protocol.encode(protocol.HostReply(host_call_id=1, code=0, data=EnvHost.VALUE))
        raw_process = raw_zmq_process_round_trip(f"ipc://{runtime}/raw-p.sock", request, reply, args.calls)
        raw_thread = raw_zmq_round_trip(f"ipc://{runtime}/raw-t.sock", request, reply, args.calls)

    raw = median_us(raw_process)
    rows = [
        ("worker start + first no-op call (warm cache, fork server)", median_us(starts)),
        ("no-op export call (supervisor -> worker -> supervisor)", median_us(noop)),
        ("host call (guest -> worker -> supervisor -> worker -> guest)", statistics.median(host) * 1e6),
        ("raw pyzmq DEALER/ROUTER req/rep over ipc, separate process", raw),
        ("raw pyzmq DEALER/ROUTER req/rep over ipc, thread in-process", median_us(raw_thread)),
    ]
    for label, value in rows:
        print(f"{label:<66} {value:9.1f} µs")
    print(f"ratio host call / raw pyzmq (process)   {rows[2][1] / raw:5.2f}x   (target <= 1.5x)")
    print(f"ratio no-op export / raw pyzmq (process) {rows[1][1] / raw:5.2f}x")


if __name__ == "__main__":
    main()
