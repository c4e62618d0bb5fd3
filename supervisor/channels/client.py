"""The CLI's side of the daemon's channel operations (control ops `channel_start|channel_stop|channel_status`)."""

from __future__ import annotations

from typing import Any

from supervisor.control_client import ControlError, DaemonClient, Request
from supervisor.call_api import CallRefused


def channel_request(client: DaemonClient, op: str, plugin: str = "", *, poll_ms: int | None = None,
                    project: str = "", passphrase: str = "") -> dict[str, Any]:
    """Run one channel operation on the daemon; returns `{"webhook": {...}, "channels": [...]}`."""
    reply = client.request(Request(op=op, plugin=plugin, poll_ms=poll_ms, project=project, passphrase=passphrase))
    if not reply.ok:
        if reply.refused:
            raise CallRefused(reply.error)
        raise ControlError(reply.error)
    return reply.result or {"webhook": {"url": None, "error": None}, "channels": []}
