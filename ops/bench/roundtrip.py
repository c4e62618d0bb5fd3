"""Round-trip costs of the worker path, as ratios to raw pyzmq measured in the same run.

    .venv/bin/python ops/bench/roundtrip.py [--calls 2000] [--rounds 5]

(`measure` gives the report's figures: `.venv/bin/python -m ops.bench --topics roundtrip`.)

The machine is shared and noisy, so the worker path and the raw baseline are measured in alternating rounds and
each figure is the median over all rounds. Prints medians (µs) of:
  - one host call guest->worker->supervisor->worker->guest (a guest export making N env.get calls, per call),
  - one no-op export call on a fresh instance (supervisor->worker->supervisor),
  - a raw pyzmq DEALER/ROUTER request/reply over ipc between two processes with the host call's payloads,
  - a raw socketpair request/reply between two processes (the floor),
  - worker cold start + first call (warm module cache, preloaded fork server),
  - after kill -9 of a worker mid-call: how long until the call fails, and until the next call succeeds,
and the ratios against the design targets.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
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
  (func $env_calls (param $n i32) (result i32)
    (loop $l
      (drop (call $env_get (i32.const 16) (i32.const 9) (i32.const 4096)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))
    (i32.const 0))
  (func (export "env_loop") (result i32) (call $env_calls (i32.const %d)))
  (func (export "spin") (result i32) (loop $l (br $l)) (i32.const 0))
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


# --------------------------------------------------------------------------- raw baselines (separate processes)


class RawZmqPeer:
    """A DEALER in a forkserver child that, on each "go", makes n request/replies and reports their times."""

    def __init__(self, endpoint: str, request: bytes, reply: bytes) -> None:
        import multiprocess

        self._context = zmq.Context()
        self._router = self._context.socket(zmq.ROUTER)
        self._router.bind(endpoint)
        self._reply = reply
        self._process = multiprocess.get_context("forkserver").Process(target=_dealer_child, args=(endpoint, request))
        self._process.start()
        self._ident, _ = self._router.recv_multipart()

    def round(self, n: int) -> list[float]:
        self._router.send_multipart([self._ident, str(n).encode()])
        for _ in range(n):
            self._router.recv_multipart()
            self._router.send_multipart([self._ident, self._reply])
        _, blob = self._router.recv_multipart()
        return [float(x) for x in blob.decode().split(",")]

    def close(self) -> None:
        self._router.send_multipart([self._ident, b"0"])
        self._process.join()
        self._router.close(linger=0)
        self._context.term()


def _dealer_child(endpoint: str, request: bytes) -> None:
    import time as _time

    import zmq as _zmq

    context = _zmq.Context()
    dealer = context.socket(_zmq.DEALER)
    dealer.connect(endpoint)
    dealer.send(b"hello")
    while (n := int(dealer.recv())) > 0:
        times = []
        for _ in range(n):
            t = _time.perf_counter()
            dealer.send(request)
            dealer.recv()
            times.append(_time.perf_counter() - t)
        dealer.send(",".join(f"{x:.9f}" for x in times).encode())
    dealer.close(linger=1000)
    context.term()


class RawSocketPeer:
    """The same with a socketpair: the floor for any cross-process request/reply."""

    def __init__(self, request: bytes, reply: bytes) -> None:
        import multiprocess

        self._ours, theirs = socket.socketpair()
        self._reply = reply
        self._process = multiprocess.get_context("forkserver").Process(target=_socket_child, args=(theirs, request))
        self._process.start()
        theirs.close()

    def round(self, n: int) -> list[float]:
        self._ours.sendall(b"%d\n" % n)
        for _ in range(n):
            self._ours.recv(65536)
            self._ours.sendall(self._reply)
        blob = b""
        while not blob.endswith(b"\n"):
            blob += self._ours.recv(1 << 20)
        return [float(x) for x in blob.decode().strip().split(",")]

    def close(self) -> None:
        self._ours.sendall(b"0\n")
        self._process.join()
        self._ours.close()


def _socket_child(sock: socket.socket, request: bytes) -> None:
    import time as _time

    while (n := int(sock.recv(64).strip() or b"0")) > 0:
        times = []
        for _ in range(n):
            t = _time.perf_counter()
            sock.sendall(request)
            sock.recv(65536)
            times.append(_time.perf_counter() - t)
        sock.sendall((",".join(f"{x:.9f}" for x in times) + "\n").encode())


# --------------------------------------------------------------------------- the worker path


def measure_calls(pool: WorkerPool, plugin, n: int) -> tuple[list[float], list[float]]:
    noop = []
    for _ in range(n):
        t = time.perf_counter()
        pool.call(plugin, "noop", [], None)
        noop.append(time.perf_counter() - t)
    host = []
    for _ in range(max(5, n // HOST_CALLS_PER_EXPORT)):
        t = time.perf_counter()
        pool.call(plugin, "env_loop", [], None).raise_for_error()
        host.append((time.perf_counter() - t) / HOST_CALLS_PER_EXPORT)
    return noop, host


def measure_starts(pool: WorkerPool, plugin, n: int) -> list[float]:
    starts = []
    for _ in range(n):
        pool.stop(plugin.name)
        t = time.perf_counter()
        pool.call(plugin, "noop", [], None).raise_for_error()
        starts.append(time.perf_counter() - t)
    return starts


def measure_kill(pool: WorkerPool, plugin) -> tuple[float, float]:
    """kill -9 the worker 50 ms into a spinning call: (kill -> call failed, failed -> next call succeeded)."""
    pid = pool.call(plugin, "noop", [], None).raise_for_error().worker_pid
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.perf_counter())
        os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(0.05, kill)
    timer.start()
    outcome = pool.call(plugin, "spin", [], None)
    failed_at = time.perf_counter()
    timer.join()
    assert outcome.error_kind == "worker_died", outcome
    pool.call(plugin, "noop", [], None).raise_for_error()
    recovered_at = time.perf_counter()
    if hasattr(pool, "reset"):
        pool.reset(plugin.name)  # every sample is a first crash
    return failed_at - killed_at[0], recovered_at - failed_at


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="no-op calls (and host calls) per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--host", choices=("minimal", "real"), default="minimal",
                        help="answer host calls with a minimal fixed host, or the real PluginHost (capability "
                             "check, audit trail) with env = [\"BENCH_VAR\"] declared")
    args = parser.parse_args()
    import wasmtime

    request = protocol.encode(protocol.EnvGet(host_call_id=1, name="BENCH_VAR"))
    reply = protocol.encode(protocol.HostReply(host_call_id=1, code=0, data=EnvHost.VALUE))
    noop, host, raw, pair, starts, died, recovered = [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plugin_dir = tmp / "bench"
        plugin_dir.mkdir()
        (plugin_dir / "plugin.toml").write_text('[plugin]\nname = "bench"\nversion = "0.1.0"\ntype = "tool"\n'
                                                '[capabilities]\nenv = ["BENCH_VAR"]\n')
        (plugin_dir / "plugin.wasm").write_bytes(bytes(wasmtime.wat2wasm(WAT)))
        plugin = load_plugin_dir(plugin_dir)
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        cache = ModuleCache(tmp / "cache")
        if args.host == "real":
            from supervisor.host import PluginHost

            environ = {"BENCH_VAR": EnvHost.VALUE.decode()}

            def make_host(p):
                return PluginHost(p, environ=environ, audit_path=tmp / "audit.log")
        else:
            def make_host(p):
                return EnvHost()
        with WorkerPool(runtime, cache, make_host) as pool:
            pool.call(plugin, "noop", [], None).raise_for_error()  # fork server + module cache warm
            raw_peer = RawZmqPeer(f"ipc://{runtime}/raw.sock", request, reply)
            pair_peer = RawSocketPeer(request, reply)
            for _ in range(args.rounds):
                round_noop, round_host = measure_calls(pool, plugin, args.calls)
                noop += round_noop
                host += round_host
                raw += raw_peer.round(args.calls)
                pair += pair_peer.round(args.calls)
                starts += measure_starts(pool, plugin, 4)
                fail_s, next_s = measure_kill(pool, plugin)
                died.append(fail_s)
                recovered.append(next_s)
        raw_peer.close()
        pair_peer.close()

    raw_us, pair_us = median_us(raw), median_us(pair)
    host_us = statistics.median(host) * 1e6
    noop_us = median_us(noop)
    rows = [
        ("host call (guest -> worker -> supervisor -> worker -> guest)", host_us, "µs"),
        ("no-op export call, fresh instance", noop_us, "µs"),
        ("raw pyzmq DEALER/ROUTER req/rep over ipc, two processes", raw_us, "µs"),
        ("raw socketpair req/rep, two processes", pair_us, "µs"),
        ("worker cold start + first no-op call (warm cache, fork server)", median_us(starts) / 1000, "ms"),
        ("kill -9 mid-call -> call failed", median_us(died) / 1000, "ms"),
        ("call failed -> next call succeeded (first crash: backoff + start)", median_us(recovered) / 1000, "ms"),
    ]
    for label, value, unit in rows:
        print(f"{label:<68} {value:9.1f} {unit}")
    print(f"ratio host call / raw pyzmq       {host_us / raw_us:5.2f}x   (target <= 1.5x)")
    print(f"ratio host call / raw socketpair  {host_us / pair_us:5.2f}x   (target <= 2x)")
    print(f"ratio no-op export / raw pyzmq    {noop_us / raw_us:5.2f}x")


def in_process_calls(wasm: bytes, n: int) -> tuple[list[float], list[float]]:
    """The floor of both paths, in one process with wasmtime-py: a no-op export on a fresh instance (new store,
    instantiate, call), and one guest->host call whose host function copies the same 64-byte value into memory."""
    import wasmtime

    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wasm)
    value = EnvHost.VALUE

    def instantiate() -> tuple[wasmtime.Store, wasmtime.Instance]:
        store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        memory: list[wasmtime.Memory] = []

        def env_get(name_ptr: int, name_len: int, out: int) -> int:
            memory[0].read(store, name_ptr, name_ptr + name_len)
            memory[0].write(store, value, out)
            return len(value)

        linker.define_func("tark:env", "get", wasmtime.FuncType(
            [wasmtime.ValType.i32()] * 3, [wasmtime.ValType.i32()]), env_get)
        instance = linker.instantiate(store, module)
        memory.append(instance.exports(store)["memory"])
        return store, instance

    noop = []
    for _ in range(n):
        t = time.perf_counter()
        store, instance = instantiate()
        instance.exports(store)["noop"](store)
        noop.append(time.perf_counter() - t)
    store, instance = instantiate()
    env_loop = instance.exports(store)["env_loop"]
    host = []
    for _ in range(max(5, n // HOST_CALLS_PER_EXPORT)):
        t = time.perf_counter()
        env_loop(store)
        host.append((time.perf_counter() - t) / HOST_CALLS_PER_EXPORT)
    return noop, host


def measure(quick: bool) -> list:
    """The report's figures (ops/bench/report.py): worker path against raw transports and in-process wasmtime."""
    import wasmtime

    from ops.bench.common import Result

    calls, rounds = (200, 2) if quick else (2000, 5)
    wasm = bytes(wasmtime.wat2wasm(WAT))
    request = protocol.encode(protocol.EnvGet(host_call_id=1, name="BENCH_VAR"))
    reply = protocol.encode(protocol.HostReply(host_call_id=1, code=0, data=EnvHost.VALUE))
    noop, host, raw, pair, local_noop, local_host = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plugin_dir = tmp / "bench"
        plugin_dir.mkdir()
        (plugin_dir / "plugin.toml").write_text('[plugin]\nname = "bench"\nversion = "0.1.0"\ntype = "tool"\n'
                                                '[capabilities]\nenv = ["BENCH_VAR"]\n')
        (plugin_dir / "plugin.wasm").write_bytes(wasm)
        plugin = load_plugin_dir(plugin_dir)
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        with WorkerPool(runtime, ModuleCache(tmp / "cache"), lambda p: EnvHost()) as pool:
            pool.call(plugin, "noop", [], None).raise_for_error()  # fork server + module cache warm
            raw_peer = RawZmqPeer(f"ipc://{runtime}/raw.sock", request, reply)
            pair_peer = RawSocketPeer(request, reply)
            try:
                for _ in range(rounds):  # interleaved, so the machine's load falls on all alike
                    round_noop, round_host = measure_calls(pool, plugin, calls)
                    noop += round_noop
                    host += round_host
                    raw += raw_peer.round(calls)
                    pair += pair_peer.round(calls)
                    round_noop, round_host = in_process_calls(wasm, calls)
                    local_noop += round_noop
                    local_host += round_host
            finally:
                raw_peer.close()
                pair_peer.close()
    us = lambda samples: median_us(samples)  # noqa: E731
    host_name = "host call guest->worker->supervisor->guest (env.get, 64 B)"
    return [
        Result(host_name, us(host), "µs", "raw pyzmq DEALER/ROUTER req/rep, 2 processes", us(raw),
               target_ratio=1.2, note="medians over interleaved rounds; the raw peer sends the host call's own "
               "encoded request and reply"),
        Result(host_name, us(host), "µs", "raw socketpair req/rep, 2 processes", us(pair)),
        Result(host_name, us(host), "µs", "in-process wasmtime-py host call", us(local_host)),
        Result("no-op export call, fresh instance (supervisor->worker->supervisor)", us(noop), "µs",
               "in-process wasmtime-py: new store, instantiate, call", us(local_noop)),
    ]


if __name__ == "__main__":
    main()
