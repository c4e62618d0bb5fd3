"""Restart policy as data (Erlang/OTP style): how a failing channel instance is restarted, and when it is parked.

A failure (trap, worker death, timeout, a failed re-start) restarts the channel's instance after an exponential
backoff; more than `intensity` failures within `period_s` park the channel as crashed until the user starts it
again. Pure: the caller owns the clock and the sleeping.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class RestartPolicy:
    intensity: int = 5  # failures tolerated within the period; one more parks the channel
    period_s: float = 60.0
    backoff_initial_s: float = 0.1
    backoff_factor: float = 2.0
    backoff_max_s: float = 10.0

    def backoff(self, recent_failures: int) -> float:
        """Delay before the restart that follows the n-th failure within the period (n >= 1). Counting the window,
        not consecutive failures, keeps the backoff growing for a channel that fails after every restart."""
        exponent = min(max(recent_failures - 1, 0), 64)
        return min(self.backoff_initial_s * self.backoff_factor ** exponent, self.backoff_max_s)


@attrs.frozen
class RestartDecision:
    park: bool
    delay_s: float
    recent_failures: tuple[float, ...]  # failure times inside the window, oldest first


def decide(policy: RestartPolicy, recent_failures: tuple[float, ...], now: float) -> RestartDecision:
    """Record a failure at `now` and decide: restart after a delay, or park."""
    window = tuple(t for t in recent_failures if now - t < policy.period_s) + (now,)
    if len(window) > policy.intensity:
        return RestartDecision(park=True, delay_s=0.0, recent_failures=window)
    return RestartDecision(park=False, delay_s=policy.backoff(len(window)), recent_failures=window)
