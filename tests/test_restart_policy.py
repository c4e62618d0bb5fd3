"""Restart policy as data (policy/restart.py) and how the worker pool applies it, with real worker processes.

A crash (worker died, was killed, sent an invalid message, timed out) makes the next start wait an exponential
backoff; more than `intensity` crashes within `period_s` park the plugin as `crashed`: its calls fail at once with
a message saying how to recover, until `WorkerPool.reset(name)`. A clean stop (idle, Shutdown) is not a crash.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

import wasm_fixtures
from policy.restart import Parked, RestartPolicy, StartAfter, StartNow, decide, recent
from supervisor.plugin import InstalledPlugin
from supervisor.workers import PARKED, RESTARTING
from wasm_fixtures import make_guest

BODY = '(func (export "status") (result i32) (i32.const 7))'


# --------------------------------------------------------------------------- the pure decision


def test_no_crashes_start_now() -> None:
    assert decide(RestartPolicy(), [], now=100.0) == StartNow()


def test_the_backoff_grows_by_the_factor_up_to_the_maximum() -> None:
    policy = RestartPolicy(intensity=100, backoff_initial_s=0.1, backoff_factor=2, backoff_max_s=1.0)
    assert [policy.backoff_s(n) for n in range(0, 7)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.backoff_s(10_000) == 1.0


def test_the_next_start_waits_the_backoff_from_the_last_crash() -> None:
    policy = RestartPolicy(backoff_initial_s=0.1, backoff_factor=2)
    assert decide(policy, [10.0], now=10.0) == StartAfter(pytest.approx(0.1))
    assert decide(policy, [10.0], now=10.04) == StartAfter(pytest.approx(0.06))
    assert decide(policy, [10.0], now=10.1) == StartNow()
    assert decide(policy, [9.0, 10.0], now=10.05) == StartAfter(pytest.approx(0.15))  # second crash: 0.2 s


def test_more_crashes_than_the_intensity_within_the_period_park() -> None:
    policy = RestartPolicy(intensity=3, period_s=60)
    assert isinstance(decide(policy, [1.0, 2.0, 3.0], now=3.0), StartAfter)
    assert decide(policy, [1.0, 2.0, 3.0, 4.0], now=4.0) == Parked(crashes=4, period_s=60)


def test_crashes_older_than_the_period_no_longer_count() -> None:
    policy = RestartPolicy(intensity=2, period_s=10)
    assert recent(policy, [5.0, 1.0, 30.0, 25.0], now=31.0) == [25.0, 30.0]
    assert isinstance(decide(policy, [1.0, 2.0, 30.0], now=30.0), StartAfter)
    assert decide(policy, [1.0, 2.0, 30.0], now=45.0) == StartNow()


def test_intensity_zero_parks_on_the_first_crash() -> None:
    assert decide(RestartPolicy(intensity=0), [5.0], now=5.0) == Parked(crashes=1, period_s=60)


@pytest.mark.parametrize("field", ["intensity", "backoff_initial_s", "backoff_max_s"])
def test_negative_values_are_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=f"restart policy {field} must not be negative"):
        RestartPolicy(**{field: -1})


@pytest.mark.parametrize("field", ["period_s", "backoff_factor"])
def test_zero_period_or_factor_is_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=f"restart policy {field} must be positive"):
        RestartPolicy(**{field: 0})


# --------------------------------------------------------------------------- the pool applies it


def reaped(pid: int) -> None:
    """Wait until the fork server has reaped `pid` (and so reported its exit)."""
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


@pytest.fixture
def plugin(tmp_path: Path) -> InstalledPlugin:
    return make_guest(tmp_path / "probe", BODY)


def test_a_crash_delays_the_next_start_by_the_backoff(make_pool, plugin) -> None:
    pool = make_pool(restart=RestartPolicy(backoff_initial_s=0.4), worker_entry=wasm_fixtures.garbage_worker)
    crashed = pool.call(plugin, "status", [], None)
    assert crashed.error_kind == "invalid_message"
    crashed_at = time.monotonic()
    again = pool.call(plugin, "status", [], None)
    assert again.error_kind == "invalid_message"  # it did start again...
    assert time.monotonic() - crashed_at >= 0.4  # ...but only after the backoff
    assert again.worker_pid != crashed.worker_pid


def test_too_many_crashes_park_the_plugin_until_reset(make_pool, plugin) -> None:
    pool = make_pool(restart=RestartPolicy(intensity=2, period_s=60, backoff_initial_s=0.01),
                     worker_entry=wasm_fixtures.garbage_worker)
    kinds = [pool.call(plugin, "status", [], None).error_kind for _ in range(3)]
    assert kinds == ["invalid_message"] * 3

    parked = pool.call(plugin, "status", [], None)
    assert parked.error_kind == PARKED
    assert parked.error_message.startswith(
        "plugin 'probe' is parked after 3 crashes in 60 s; last error: worker for plugin 'probe' sent an invalid"
        " message: invalid message from worker"
    )
    assert parked.error_message.endswith("; run `tark plugin enable probe` or restart the supervisor to start it again")
    assert parked.worker_pid is None and parked.duration_s < 0.5  # no worker was started
    [status] = pool.status()
    assert (status.state, status.pid, status.last_error) == ("crashed", None, parked.error_message)

    pool.reset("probe")
    assert pool.call(plugin, "status", [], None).error_kind == "invalid_message"  # starts again after reset


def test_a_worker_killed_while_idle_counts_as_a_crash(make_pool, plugin) -> None:
    pool = make_pool(restart=RestartPolicy(intensity=0))
    pid = pool.call(plugin, "status", [], None).worker_pid
    os.kill(pid, signal.SIGKILL)
    reaped(pid)
    outcome = pool.call(plugin, "status", [], None)
    assert outcome.error_kind == PARKED
    assert "last error: worker for plugin 'probe' died while idle (killed by signal SIGKILL)" in outcome.error_message
    pool.reset("probe")
    after = pool.call(plugin, "status", [], None)
    assert after.ret == 7 and after.worker_pid != pid


def test_a_call_deadline_is_not_a_crash(make_pool, tmp_path: Path) -> None:
    # The deadline ends the call and replaces the worker, and the plugin is usable at once (docs/limits.md): no
    # backoff, no parking. A guest that spins costs each caller its own deadline, nothing more.
    spinner = make_guest(tmp_path / "spinner", '(func (export "spin") (result i32) (loop $l (br $l)) (i32.const 0))'
                                               '(func (export "quick") (result i32) (i32.const 1))')
    pool = make_pool(restart=RestartPolicy(intensity=0, backoff_initial_s=5))
    for _ in range(2):
        assert pool.call(spinner, "spin", [], None, timeout_s=0.2).error_kind == "timeout"
    started = time.monotonic()
    assert pool.call(spinner, "quick", [], None).ret == 1
    assert time.monotonic() - started < 2
    [status] = pool.status()
    assert (status.state, status.restarts) == ("running", 0)


def test_clean_stops_are_not_crashes(make_pool, plugin) -> None:
    pool = make_pool(restart=RestartPolicy(intensity=0, backoff_initial_s=5))
    for _ in range(3):
        started = time.monotonic()
        assert pool.call(plugin, "status", [], None).ret == 7
        assert time.monotonic() - started < 2  # no backoff
        pool.stop("probe")
    [status] = pool.status()
    assert (status.state, status.restarts) == ("stopped", 0)


def test_a_backoff_longer_than_the_call_timeout_fails_at_once(make_pool, plugin) -> None:
    pool = make_pool(restart=RestartPolicy(backoff_initial_s=30), worker_entry=wasm_fixtures.garbage_worker)
    assert pool.call(plugin, "status", [], None).error_kind == "invalid_message"
    outcome = pool.call(plugin, "status", [], None, timeout_s=1)
    assert outcome.error_kind == RESTARTING and outcome.duration_s < 0.5
    assert "is restarting after a crash; its next start is in" in outcome.error_message
