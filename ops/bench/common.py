"""The shape every benchmark topic shares (docs/performance.md).

A topic is a module ops/bench/<topic>.py with `def measure(quick: bool) -> list[Result]`; ops/bench/report.py
runs the topics it lists and prints their results as one table. `quick` means small sizes and few repetitions:
the harness test runs every topic that way so that no topic can rot unnoticed; the figures then mean little.

Every Result carries its own baseline, measured in the same run (the machine is shared and noisy: only ratios
taken minutes apart from each other compare), and its target: on the ratio, on the value, or both.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import attrs


@attrs.frozen
class Result:
    name: str  # what was measured, e.g. "host call (guest -> worker -> supervisor -> guest)"
    value: float
    unit: str  # "ms", "µs", "MiB", "fds", "calls/s", ...
    baseline_name: str  # the same-run reference the ratio is taken against
    baseline: float
    target_ratio: float | None = None  # met when ratio <= target_ratio (>= when higher_is_better)
    target_value: float | None = None  # met when value <= target_value, in `unit` (>= when higher_is_better)
    higher_is_better: bool = False
    note: str = ""  # how it was measured, or why a target is missed

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.inf

    @property
    def verdict(self) -> str:
        """"pass", "miss", or "-" when the figure has no target (shown for context)."""
        checks = []
        if self.target_ratio is not None:
            checks.append(self._meets(self.ratio, self.target_ratio))
        if self.target_value is not None:
            checks.append(self._meets(self.value, self.target_value))
        if not checks:
            return "-"
        return "pass" if all(checks) else "miss"

    @property
    def target(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        parts = []
        if self.target_ratio is not None:
            parts.append(f"{sign} {self.target_ratio:g}x")
        if self.target_value is not None:
            parts.append(f"{sign} {self.target_value:g} {self.unit}")
        return ", ".join(parts) or "-"

    @property
    def shortfall(self) -> str:
        """By how much a missed target is missed ("" when met or without target), e.g. "ratio 1.60x vs <= 1.2x:
        33% over"."""
        parts = []
        for label, actual, target in (("ratio", self.ratio, self.target_ratio), ("value", self.value, self.target_value)):
            if target is None or self._meets(actual, target) or not target:
                continue
            off = abs(actual / target - 1) * 100
            shown = f"{actual:.2f}x" if label == "ratio" else f"{actual:.3g} {self.unit}"
            parts.append(f"{label} {shown} vs {'>=' if self.higher_is_better else '<='} {target:g}"
                         f"{'x' if label == 'ratio' else ' ' + self.unit}: {off:.0f}% "
                         f"{'under' if self.higher_is_better else 'over'}")
        return "; ".join(parts)

    def _meets(self, actual: float, target: float) -> bool:
        return actual >= target if self.higher_is_better else actual <= target


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of `function` took."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def alternate(rounds: int, *measures: Callable[[], list[float]]) -> list[list[float]]:
    """Run each measure once per round, interleaved, so that the machine's load falls on all of them alike."""
    samples: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for collected, measure in zip(samples, measures):
            collected.extend(measure())
    return samples


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tark-bench-") as name:
        yield Path(name)


def write_plugin(directory: Path, name: str, wasm: bytes, *, plugin_type: str = "tool", extra_toml: str = "") -> Path:
    """A plugin directory (plugin.toml + plugin.wasm) as `tark plugin install` would find it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plugin.toml").write_text(
        f'[plugin]\nname = "{name}"\nversion = "0.1.0"\ntype = "{plugin_type}"\n{extra_toml}')
    (directory / "plugin.wasm").write_bytes(wasm)
    return directory


class NoHost:
    """The host of a benchmark guest that makes no host calls: one arriving is a bug in the benchmark."""

    def handle(self, request):  # noqa: ANN001, ANN201
        raise AssertionError(f"unexpected host call {request!r}")

    def on_log(self, message: object) -> None:
        pass

    def close(self) -> None:
        pass
