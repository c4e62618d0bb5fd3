"""Prometheus metrics of the daemon (`tark supervisor start --metrics-port N`), served on 127.0.0.1 only.

Read from the pool's status on each scrape (no second set of counters): calls and their latency histogram,
host calls by capability and decision, CPU seconds and USS of each worker, restarts.
"""

from __future__ import annotations

from typing import Callable, Iterator

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric


class PoolCollector:
    def __init__(self, status: Callable[[], list[dict]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("tark_plugin_calls", "Export calls by outcome", labels=["plugin", "outcome"])
        latency = HistogramMetricFamily("tark_plugin_call_seconds", "Export call wall time", labels=["plugin"])
        host = CounterMetricFamily("tark_plugin_host_calls", "Host calls by capability and decision",
                                   labels=["plugin", "capability", "decision"])
        restarts = CounterMetricFamily("tark_plugin_restarts", "Worker restarts after a crash", labels=["plugin"])
        cpu = CounterMetricFamily("tark_plugin_cpu_seconds", "CPU time of the running worker", labels=["plugin"])
        uss = GaugeMetricFamily("tark_plugin_uss_bytes", "Unique memory of the running worker", labels=["plugin"])
        for worker in self._status():
            name = worker["name"]
            stats = worker.get("stats") or {}
            for outcome, count in (stats.get("outcomes") or {}).items():
                calls.add_metric([name, outcome], count)
            seconds = stats.get("call_seconds")
            if seconds:
                cumulative, buckets = 0, []
                for bound, count in zip([*seconds["buckets"], float("inf")], seconds["counts"]):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
                latency.add_metric([name], buckets, seconds["sum"])
            for capability, decisions in (stats.get("host_calls") or {}).items():
                for decision, count in decisions.items():
                    host.add_metric([name, capability, decision], count)
            restarts.add_metric([name], worker["restarts"])
            if worker.get("pid"):
                try:
                    process = psutil.Process(worker["pid"])
                    times = process.cpu_times()
                    cpu.add_metric([name], times.user + times.system)
                    uss.add_metric([name], process.memory_full_info().uss)
                except psutil.Error:
                    pass
        yield from (calls, latency, host, restarts, cpu, uss)


def serve_metrics(port: int, status: Callable[[], list[dict]], host: str = "127.0.0.1"):
    """Serve the metrics on host:port in a thread; returns (server, thread) to shut down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(status))  # type: ignore[arg-type]
    return start_http_server(port, addr=host, registry=registry)
