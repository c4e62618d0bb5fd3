"""tark:log.* and WASI stdout/stderr — the plugin's lines in the supervisor's logging, tagged and rate-limited.

Lines go to logger `tark.plugin.<name>` as `[plugin:<name>] <msg>`. Control characters are escaped so a plugin
cannot forge other log lines. A token bucket bounds the rate; dropped lines are counted and reported in one
"N messages dropped" line when logging resumes (or at close).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import attrs

from policy.limits import Limits
from policy.rate import TokenBucket
from policy.text import escape_control

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
STREAM_LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}


@attrs.frozen
class LogConfig:
    plugin: str
    lines_per_second: float
    burst: int
    max_line_chars: int

    @classmethod
    def derive(cls, plugin: str, limits: Limits) -> "LogConfig":
        return cls(plugin=plugin, lines_per_second=limits.log_lines_per_second, burst=limits.log_burst,
                   max_line_chars=limits.log_max_line_chars)


class _Throttle:
    """A token bucket that counts what it refused, so the count can be reported when lines flow again."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._bucket = TokenBucket(rate, burst, clock)
        self._dropped = 0
        self._lock = threading.Lock()

    def admit(self) -> tuple[bool, int]:
        """(admitted, lines refused since the last admission; 0 when not admitted)."""
        with self._lock:
            if not self._bucket.take():
                self._dropped += 1
                return False, 0
            dropped, self._dropped = self._dropped, 0
            return True, dropped

    def drain(self) -> int:
        """The refused lines not reported yet (for close)."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
            return dropped


class LogCapability:
    def __init__(self, config: LogConfig, logger: logging.Logger | None = None) -> None:
        self.config = config
        self.logger = logger or logging.getLogger(f"tark.plugin.{config.plugin}")
        self._throttle = _Throttle(config.lines_per_second, config.burst, time.monotonic)
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()

    def log(self, level: str, message: str) -> None:
        self._emit(LEVELS.get(level, logging.INFO), message)

    def output(self, stream: str, data: bytes) -> None:
        """WASI output: complete lines are logged; a trailing partial line waits for its end (or close)."""
        level = STREAM_LEVELS.get(stream, logging.INFO)
        with self._lock:
            text = self._partial.pop(stream, "") + data.decode("utf-8", errors="replace")
            *lines, rest = text.split("\n")
            if len(rest) > self.config.max_line_chars:
                lines.append(rest)
                rest = ""
            if rest:
                self._partial[stream] = rest
        for line in lines:
            self._emit(level, line.rstrip("\r"))

    def close(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, {}
        for stream, rest in partial.items():
            self._emit(STREAM_LEVELS.get(stream, logging.INFO), rest)
        dropped = self._throttle.drain()
        if dropped:
            self.logger.warning("[plugin:%s] %d messages dropped (rate limit)", self.config.plugin, dropped)

    def _emit(self, level: int, message: str) -> None:
        if not self.logger.isEnabledFor(level):
            return
        admitted, dropped = self._throttle.admit()
        if not admitted:
            return
        if dropped:
            self.logger.warning("[plugin:%s] %d messages dropped (rate limit)", self.config.plugin, dropped)
        if len(message) > self.config.max_line_chars:
            message = message[: self.config.max_line_chars] + f"… ({len(message)} characters)"
        self.logger.log(level, "[plugin:%s] %s", self.config.plugin, escape_control(message))


class RateLimitedLogger(logging.LoggerAdapter):
    """What the capability handlers say about one plugin (a refused storage.set, an oversized value, a failed
    read) goes through a token bucket too: a plugin looping on a failing call must not flood the supervisor's
    stderr. Suppressed messages are counted and reported in one line when logging resumes, or at close."""

    def __init__(self, logger: logging.Logger, rate: float = 5.0, burst: int = 50,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logger, {})
        self._throttle = _Throttle(rate, burst, clock)

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        if not self.isEnabledFor(level):
            return
        admitted, dropped = self._throttle.admit()
        if not admitted:
            return
        if dropped:
            self.logger.warning("%d more messages about this plugin suppressed (rate limit)", dropped)
        self.logger.log(level, msg, *args, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        dropped = self._throttle.drain()
        if dropped:
            self.logger.warning("%d more messages about this plugin suppressed (rate limit)", dropped)
