"""`tark plugin audit [NAME] [--since DURATION_OR_TIME] [--json]`: read the audit trail (current + rotated files)."""

from __future__ import annotations

import datetime
import re
from typing import Any

import click

from policy.text import escape_control
from supervisor.capabilities.audit import default_audit_path, read_audit_trail
from supervisor.cli.output import json_option, print_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class SinceError(click.BadParameter):
    pass


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """`30s`, `10m`, `2h`, `1d`, `1w` before `now`, or an ISO 8601 date/time (local time when it has no offset)."""
    match = _DURATION.match(text)
    if match:
        return now - datetime.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SinceError(f"'{text}' is neither a duration (30s, 10m, 2h, 1d, 1w) nor an ISO 8601 time "
                         "(2026-11-30 or 2026-11-30T17:00)", param_hint="--since") from None
    return when if when.tzinfo is not None else when.astimezone()


def _record_time(record: dict[str, Any]) -> datetime.datetime | None:
    try:
        when = datetime.datetime.fromisoformat(str(record.get("time", "")))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)


def format_record(record: dict[str, Any]) -> str:
    """One line for a terminal; every field from the file is untrusted text and shown escaped."""
    def text(value: Any) -> str:
        return escape_control(str(value))

    head = f"{text(record.get('time', '?'))}  {text(record.get('plugin') or '-')}"
    kind = record.get("kind", "decision")
    if kind == "decision":
        return (f"{head}  {text(record.get('decision', '?'))} {text(record.get('capability', '?'))} "
                f"{text(record.get('target', ''))}  ({text(record.get('reason', ''))})")
    if kind == "suppressed":
        counts = record.get("counts") or []
        parts = ", ".join(f"{text(c.get('count'))} {text(c.get('decision'))} {text(c.get('capability'))}"
                          for c in counts if isinstance(c, dict))
        return f"{head}  suppressed {parts} records in the last {text(record.get('seconds', '?'))} s (rate limit)"
    fields = " ".join(f"{text(k)}={text(v)}" for k, v in record.items() if k not in ("time", "plugin", "kind"))
    return f"{head}  {text(kind)} {fields}".rstrip()


@click.command("audit")
@click.argument("plugin_id", required=False)
@click.option("--since", metavar="DURATION_OR_TIME",
              help="Only records newer than this: 30s, 10m, 2h, 1d, 1w, or an ISO 8601 date/time.")
@json_option
def audit_command(plugin_id: str | None, since: str | None, as_json: bool) -> None:
    """Show the audit trail of capability and consent events.

    Capability decisions, approvals, revocations and integrity events. Allowed decisions of a running daemon are written in batches, at most about a second late."""
    cutoff = parse_since(since, datetime.datetime.now(datetime.timezone.utc)) if since else None
    records = []
    for record in read_audit_trail(default_audit_path()):
        if plugin_id is not None and record.get("plugin") != plugin_id:
            continue
        if cutoff is not None:
            when = _record_time(record)
            if when is None or when < cutoff:
                continue
        records.append(record)
    if as_json:
        print_json(records)
        return
    if not records:
        click.echo("No audit records" + (f" for {escape_control(plugin_id)}" if plugin_id else "")
                   + (f" since {escape_control(since)}" if since else "") + ".")
        return
    for record in records:
        click.echo(format_record(record))


