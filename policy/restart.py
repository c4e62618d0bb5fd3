"""When a plugin's crashed worker may start again: restart policy as data, as in Erlang/OTP supervisors.

A worker that dies abnormally (crash, kill, invalid message) is restarted after an exponential backoff;
more than `intensity` crashes within `period_s` park the plugin as `crashed` until someone resets it. Pure: the
caller passes the crash times and the current time (any monotonic clock).
"""

from __future__ import annotations

from typing import Sequence, Union

import attrs


def _non_negative(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"restart policy {attribute.name} must not be negative, got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"restart policy {attribute.name} must be positive, got {value!r}")


@attrs.frozen
class RestartPolicy:
    intensity: int = attrs.field(default=5, validator=_non_negative)  # crashes tolerated within period_s
    period_s: float = attrs.field(default=60.0, validator=_positive)
    backoff_initial_s: float = attrs.field(default=0.1, validator=_non_negative)  # delay after the first crash
    backoff_max_s: float = attrs.field(default=5.0, validator=_non_negative)
    backoff_factor: float = attrs.field(default=2.0, validator=_positive)  # each further recent crash multiplies

    def backoff_s(self, recent_crashes: int) -> float:
        """Delay before the start that follows the `recent_crashes`-th crash in the period (0 for none)."""
        if recent_crashes <= 0:
            return 0.0
        exponent = min(recent_crashes - 1, 64)  # the cap applies long before; avoid float overflow
        return min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor**exponent)


@attrs.frozen
class StartNow:
    pass


@attrs.frozen
class StartAfter:
    delay_s: float


@attrs.frozen
class Parked:
    crashes: int  # crashes within the period
    period_s: float


Decision = Union[StartNow, StartAfter, Parked]


def recent(policy: RestartPolicy, crash_times: Sequence[float], now: float) -> list[float]:
    """The crash times that still count: those within the last `period_s`, oldest first."""
    return sorted(t for t in crash_times if now - t <= policy.period_s)


def decide(policy: RestartPolicy, crash_times: Sequence[float], now: float) -> Decision:
    """May the plugin's next worker start now, after a delay, or is the plugin parked?"""
    counted = recent(policy, crash_times, now)
    if len(counted) > policy.intensity:
        return Parked(crashes=len(counted), period_s=policy.period_s)
    if not counted:
        return StartNow()
    remaining = counted[-1] + policy.backoff_s(len(counted)) - now
    return StartAfter(remaining) if remaining > 0 else StartNow()
