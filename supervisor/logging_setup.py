"""Logging for the supervisor and CLI: a RUST_LOG-style filter (`TARK_LOG`) applied to Python loggers.

Filter syntax: comma-separated directives, each `LEVEL` (the default for everything) or `TARGET=LEVEL`
(that logger and its children). Targets are logger names; Rust's `::` separator is accepted as `.`.
Examples: `warn`, `debug`, `supervisor.registry=debug,warn`, `tark.plugin.my-plugin=info`.
Plugins log under `tark.plugin.<id>`. The default level is warn; `-v` makes it debug.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import NamedTuple

from policy.text import escape_control

ENV_VAR = "TARK_LOG"
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}
_TARGET = re.compile(r"^[A-Za-z0-9_.:-]+$")
_HANDLER_NAME = "tark-cli"


class EscapingFormatter(logging.Formatter):
    """Each record is one line: control characters in the message (plugin log lines, guest errors, manifest
    text, paths) are escaped, so nothing logged can forge another line or reach the terminal as a control
    sequence. Tracebacks, which are ours, are appended as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)


class LogFilterError(ValueError):
    pass


class LogFilter(NamedTuple):  # not attrs: every CLI command sets up logging, the thin ones too
    default: int = logging.WARNING
    targets: tuple[tuple[str, int], ...] = ()


def parse_log_filter(spec: str) -> LogFilter:
    default = logging.WARNING
    targets: dict[str, int] = {}
    for raw in spec.split(","):
        directive = raw.strip()
        if not directive:
            continue
        target, sep, level_text = directive.rpartition("=")
        if not sep:
            target, level_text = "", directive
        level = _LEVELS.get(level_text.strip().lower())
        if level is None:
            raise LogFilterError(f"Invalid {ENV_VAR} filter '{spec}': unknown level '{level_text.strip()}' "
                                 f"(use one of {', '.join(sorted(set(_LEVELS) - {'warning'}))})")
        if not sep:
            default = level
            continue
        target = target.strip().replace("::", ".")
        if not _TARGET.match(target):
            raise LogFilterError(f"Invalid {ENV_VAR} filter '{spec}': bad target '{target}' "
                                 "(use a logger name such as supervisor.registry or tark.plugin.my-plugin)")
        targets[target] = level
    return LogFilter(default=default, targets=tuple(targets.items()))


def configure_logging(verbose: bool, spec: str | None) -> LogFilter:
    """Apply `spec` (TARK_LOG) to the logging tree; `verbose` lowers the default level to debug.

    Calling it again replaces the previous configuration (the CLI may run several times in one process).
    """
    log_filter = parse_log_filter(spec) if spec else LogFilter()
    if verbose:
        log_filter = log_filter._replace(default=min(log_filter.default, logging.DEBUG))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        for name in getattr(old, "tark_targets", ()):
            logging.getLogger(name).setLevel(logging.NOTSET)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.tark_targets = tuple(name for name, _ in log_filter.targets)  # type: ignore[attr-defined]
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(log_filter.default)
    for name, level in log_filter.targets:
        logging.getLogger(name).setLevel(level)
    return log_filter
