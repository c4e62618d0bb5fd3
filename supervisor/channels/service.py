"""The daemon's channel service: the ChannelManager, the webhook listener, and the control operations on them.

`--webhook-port` given explicitly must bind, or the daemon does not start. The default port (8765, like
`tark serve`) may be taken, e.g. by tark itself: then the daemon starts without webhooks, says so in its log
and in `tark channel status` / `tark supervisor status`, and poll loops still run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import attrs

from supervisor.channel_credentials import CredentialsSource, environment_passphrase
from supervisor.channels.manager import DEFAULT_POLL_MS, ChannelManager
from supervisor.channels.operations import ChannelApi
from supervisor.channels.webhook import (DEFAULT_HOST, DEFAULT_PORT, WebhookListener, WebhookListenError,
                                         webhook_path)
from supervisor.control import Reply, Request
from supervisor.registry import Registry

log = logging.getLogger(__name__)


@attrs.frozen
class WebhookConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    explicit: bool = False  # the user chose the port: failing to bind it is an error


class ChannelService:
    def __init__(self, api: ChannelApi, registry: Registry, config: WebhookConfig = WebhookConfig()) -> None:
        self.manager = ChannelManager(api, registry)
        self._listener: WebhookListener | None = None
        self._listen_error: str | None = None
        try:
            self._listener = WebhookListener(self.manager, config.host, config.port)
        except WebhookListenError as exc:
            if config.explicit:
                raise
            self._listen_error = str(exc)
            log.warning("channel webhooks are not served: %s", exc)
        if self._listener is not None:
            self._listener.start()

    def webhook(self) -> dict[str, Any]:
        base = self._listener.base_url if self._listener is not None else None
        return {"url": base, "error": self._listen_error}

    def status(self, name: str | None = None) -> dict[str, Any]:
        base = self._listener.base_url if self._listener is not None else None
        channels = [dict(c, webhook_url=f"{base}{webhook_path(c['name'])}" if base else None)
                    for c in self.manager.status(name)]
        return {"webhook": self.webhook(), "channels": channels}

    def close(self) -> None:
        """Stop serving webhooks first, then every channel."""
        if self._listener is not None:
            self._listener.close()
        self.manager.close()

    def __enter__(self) -> "ChannelService":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _start(service: ChannelService, request: Request) -> Reply:
    source = CredentialsSource(Path(request.project) if request.project else None,
                               environment_passphrase(given=request.passphrase or None))
    service.manager.start(request.plugin, request.poll_ms or DEFAULT_POLL_MS, source)
    return Reply(ok=True, result=service.status(request.plugin))


def _stop(service: ChannelService, request: Request) -> Reply:
    service.manager.stop(request.plugin)
    return Reply(ok=True, result=service.status(request.plugin))


CHANNEL_OPERATIONS: dict[str, Callable[[ChannelService, Request], Reply]] = {
    "channel_start": _start,
    "channel_stop": _stop,
    "channel_status": lambda service, request: Reply(ok=True, result=service.status(request.plugin or None)),
}
