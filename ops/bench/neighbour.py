"""A neighbour plugin's call latency while another plugin is being cancelled or is attacking, as a ratio to its
latency alone (docs/limits.md).

    .venv/bin/python ops/bench/neighbour.py [--seconds 4]

The neighbour makes one no-op export call after another (fresh instance each, as tark does). Meanwhile, in
another thread, the other plugin:
  - cancelled: calls tark:http.get on a local server that never answers, with a 0.3 s deadline, again and again
    (each call's host request is cancelled and its worker replaced);
  - spinning: runs an endless loop until its 0.5 s deadline, again and again;
  - memory bomb: grows its memory page by page to the 256 MiB cap and traps, again and again.
Prints the neighbour's median and p95 latency alone and in each scenario, and the ratios. The machine is shared
and has 2 cores, so a CPU-bound attacker costs the neighbour some CPU: the question is whether it is bounded.
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from supervisor.host import PluginHost  # noqa: E402
from supervisor.modules import ModuleCache  # noqa: E402
from supervisor.workers import WorkerPool  # noqa: E402
from wasm_fixtures import make_guest  # noqa: E402

NEIGHBOUR = '(func (export "noop") (result i32) (i32.const 0))'
ATTACKER = r"""
  (func (export "fetch") (param i32 i32 i32 i32 i32) (result i32)
    (call $http_get (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "spin") (result i32) (loop $l (br $l)) (i32.const 0))
  (func (export "bomb") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)
"""


class Hanging(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(60)

    def log_message(self, *_args: object) -> None:
        pass


def latencies(pool: WorkerPool, plugin, seconds: float) -> list[float]:
    times = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        outcome = pool.call(plugin, "noop", [], None)
        times.append(time.perf_counter() - started)
        assert outcome.ok, outcome.error_message
    return times


def under(attack: Callable[[], object], pool: WorkerPool, plugin, seconds: float) -> tuple[list[float], int]:
    stop = threading.Event()
    count = [0]

    def loop() -> None:
        while not stop.is_set():
            attack()
            count[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.5)
    try:
        return latencies(pool, plugin, seconds), count[0]
    finally:
        stop.set()
        thread.join()


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0, help="neighbour calls per scenario, in seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tark-bench-") as tmp:
        root = Path(tmp)
        runtime = root / "run"
        runtime.mkdir(mode=0o700)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        neighbour = make_guest(root / "neighbour", NEIGHBOUR, name="neighbour")
        attacker = make_guest(root / "attacker", ATTACKER, name="attacker",
                              capabilities=f'http = ["http://127.0.0.1:{port}"]')
        url = f"http://127.0.0.1:{port}/".encode()
        pool = WorkerPool(runtime, ModuleCache(root / "cache"), lambda p: PluginHost(p, audit_path=root / "audit"))
        try:
            latencies(pool, neighbour, 0.5)  # warm up
            alone = summary(latencies(pool, neighbour, args.seconds))
            scenarios = {
                "attacker cancelled in http (0.3 s deadline)":
                    lambda: pool.call(attacker, "fetch", [url, b"[]"], 65536, timeout_s=0.3),
                "attacker spinning (0.5 s deadline)": lambda: pool.call(attacker, "spin", [], None, timeout_s=0.5),
                "attacker memory bomb to the 256 MiB cap": lambda: pool.call(attacker, "bomb", [], None),
            }
            print(f"{'neighbour alone':<48} median {alone[0] * 1e3:7.2f} ms   p95 {alone[1] * 1e3:7.2f} ms")
            for name, attack in scenarios.items():
                times, rounds = under(attack, pool, neighbour, args.seconds)
                median, p95 = summary(times)
                print(f"{name:<48} median {median * 1e3:7.2f} ms   p95 {p95 * 1e3:7.2f} ms   "
                      f"ratio {median / alone[0]:5.2f}x / {p95 / alone[1]:5.2f}x   ({rounds} attacker calls)")
        finally:
            pool.close()
            server.shutdown()


if __name__ == "__main__":
    main()
