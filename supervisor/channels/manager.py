"""The daemon's running channels: one kept instance each, a poll loop thread per polling channel, restarts.

Each channel's instance ("channel") lives in the plugin's own worker. `start` runs auth init + channel_start on it;
a channel that exports channel_poll then gets a poll thread, owned and joined by this manager. A failed poll call
(trap, worker death, timeout) or a worker that changed under the instance restarts the instance (auth init +
channel_start again) after the RestartPolicy's backoff; too many failures park the channel as `crashed` until the
user starts it again. Inbound messages (poll or webhook) go to a bounded per-channel inbox and the log.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import Any

import attrs

from supervisor.channel_credentials import CredentialsSource
from supervisor.channels import operations as ops
from supervisor.channels.defaults import DEFAULT_POLL_MS
from supervisor.channels.messages import InboundMessage, WebhookResponse
from policy.restart import Parked, RestartPolicy, StartAfter, decide, recent
from supervisor.registry import Registry

log = logging.getLogger(__name__)

INSTANCE = "channel"
INBOX_SIZE = 100
ACTIVE = ("starting", "running", "restarting")


class ChannelNotServed(ops.ChannelError):
    """A webhook for a channel that is not running (HTTP 404, or 503 when it crashed)."""

    def __init__(self, message: str, crashed: bool = False) -> None:
        super().__init__(message)
        self.crashed = crashed


class _InstanceLost(Exception):
    pass


@attrs.frozen
class InboxEntry:
    received_at: float
    source: str  # "poll" | "webhook"
    message: InboundMessage


@attrs.define(eq=False)
class _Channel:
    name: str
    poll_ms: int
    plugin: ops.ChannelPlugin
    display_name: str
    source: CredentialsSource | None = attrs.field(default=None, repr=False)
    state: str = "starting"
    worker_pid: int | None = None
    polls: int = 0
    webhooks: int = 0
    inbound: int = 0
    restarts: int = 0
    last_error: str | None = None
    started_at: float = attrs.field(factory=time.time)
    inbox: collections.deque[InboxEntry] = attrs.field(factory=lambda: collections.deque(maxlen=INBOX_SIZE))
    stop: threading.Event = attrs.field(factory=threading.Event)
    thread: threading.Thread | None = None


class ChannelManager:
    def __init__(self, api: ops.ChannelApi, registry: Registry, *, policy: RestartPolicy = RestartPolicy()) -> None:
        self._api = api
        self._registry = registry
        self._policy = policy
        self._lock = threading.Lock()  # guards _channels and every _Channel's fields
        self._channels: dict[str, _Channel] = {}
        self._closed = False

    # ------------------------------------------------------------------ user operations

    def start(self, name: str, poll_ms: int = DEFAULT_POLL_MS, source: CredentialsSource | None = None) -> dict[str, Any]:
        """`source`: where this channel's credentials come from (the project and passphrase of the user who started
        it); kept for the channel's later operations."""
        if poll_ms < 1:
            raise ops.ChannelError("The poll interval must be at least 1 ms")
        plugin = ops.inspect(self._api, self._registry, name, source)
        with self._lock:
            if self._closed:
                raise ops.ChannelError("The supervisor daemon is shutting down")
            previous = self._channels.get(name)
            if previous is not None and previous.state in ACTIVE:
                raise ops.ChannelError(f"Channel '{name}' is already running; stop it with: tark channel stop {name}")
            channel = self._channels[name] = _Channel(name, poll_ms, plugin, display_name=name, source=source)
        try:
            described = ops.info(self._api, plugin)
            self._api.end_instance(name, INSTANCE)  # whatever a crashed run left behind
            pid = ops.start(self._api, plugin, INSTANCE)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._api.end_instance(name, INSTANCE)
            with self._lock:
                channel.state, channel.last_error = "stopped", str(exc)
            raise
        with self._lock:
            channel.display_name = described[1] if described else name
            channel.worker_pid = pid
            channel.state = "running"
            if plugin.has("channel_poll"):
                channel.thread = threading.Thread(target=self._poll_loop, args=(channel,), name=f"channel-{name}")
                channel.thread.start()
        log.info("channel %s started (worker pid %s, %s)", name, pid,
                 f"polling every {poll_ms} ms" if channel.thread else "no poll loop")
        return self._describe(channel)

    def stop(self, name: str) -> dict[str, Any]:
        with self._lock:
            channel = self._channels.get(name)
            if channel is None or channel.state == "stopped":
                raise ops.ChannelError(f"Channel '{name}' is not running")
        self._halt(channel)
        return self._describe(channel)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if name is not None and name not in self._channels:
                raise ops.ChannelError(f"Channel '{name}' has not been started; start it with: tark channel start {name}")
            channels = [self._channels[name]] if name is not None else sorted(self._channels.values(), key=lambda c: c.name)
        return [self._describe(c) for c in channels]

    def close(self) -> None:
        """Stop every channel (joins every poll thread); later starts are refused."""
        with self._lock:
            self._closed = True
            channels = [c for c in self._channels.values() if c.state != "stopped"]
        for channel in channels:
            self._halt(channel)

    # ------------------------------------------------------------------ webhooks

    def handle_webhook(self, name: str, request_json: str) -> WebhookResponse:
        with self._lock:
            channel = self._channels.get(name)
            state = channel.state if channel is not None else None
        if state == "crashed":
            raise ChannelNotServed(f"Channel '{name}' crashed; start it again with: tark channel start {name}",
                                   crashed=True)
        if channel is None or state not in ACTIVE:
            raise ChannelNotServed(f"No channel '{name}' is running here")
        plugin = ops.inspect(self._api, self._registry, name, channel.source)  # credentials may have changed
        try:
            response = ops.handle_webhook(self._api, plugin, request_json)
        except Exception as exc:
            with self._lock:
                channel.webhooks += 1
                channel.last_error = f"webhook: {exc}"
            raise
        with self._lock:
            channel.webhooks += 1
        self._record(channel, response.messages, "webhook")
        return response

    # ------------------------------------------------------------------ internals

    def _halt(self, channel: _Channel) -> None:
        channel.stop.set()
        if channel.thread is not None:
            channel.thread.join()
        with self._lock:
            was_crashed = channel.state == "crashed"
            channel.state = "stopping" if not was_crashed else channel.state
        if not was_crashed:
            ops.stop(self._api, channel.plugin, INSTANCE)
        with self._lock:
            channel.state = "stopped"
        log.info("channel %s stopped", channel.name)

    def _record(self, channel: _Channel, messages: tuple[InboundMessage, ...], source: str) -> None:
        now = time.time()
        with self._lock:
            for message in messages:
                channel.inbox.append(InboxEntry(now, source, message))
            channel.inbound += len(messages)
        for message in messages:
            log.info("channel %s: inbound (%s) conversation=%s user=%s: %s", channel.name, source,
                     message.conversation_id, message.user_id, message.text[:200])

    def _poll_loop(self, channel: _Channel) -> None:
        name = channel.name
        failures: list[float] = []  # monotonic times the restart policy still counts
        restart_needed = False
        while not channel.stop.is_set():
            try:
                if restart_needed:
                    plugin = ops.inspect(self._api, self._registry, name, channel.source)
                    self._api.end_instance(name, INSTANCE)
                    pid = ops.start(self._api, plugin, INSTANCE)
                    with self._lock:
                        channel.plugin, channel.worker_pid, channel.state = plugin, pid, "running"
                        channel.restarts += 1
                    restart_needed = False
                    log.info("channel %s restarted (worker pid %s)", name, pid)
                result = ops.poll(self._api, channel.plugin, INSTANCE)
                with self._lock:
                    channel.polls += 1
                    if result.worker_pid != channel.worker_pid:
                        raise _InstanceLost(f"worker changed ({channel.worker_pid} -> {result.worker_pid}); "
                                            "the channel's instance was lost")
                    if result.error is not None:
                        channel.last_error = result.error
                if result.error is not None:
                    log.warning("channel %s: %s", name, result.error)
                self._record(channel, result.messages, "poll")
                channel.stop.wait(channel.poll_ms / 1000)
            except Exception as exc:  # noqa: BLE001 - any failure restarts the instance, within the policy
                now = time.monotonic()
                failures = recent(self._policy, [*failures, now], now)
                decision = decide(self._policy, failures, now)
                parked = isinstance(decision, Parked)
                delay_s = decision.delay_s if isinstance(decision, StartAfter) else 0.0
                with contextlib.suppress(Exception):
                    self._api.end_instance(name, INSTANCE)
                with self._lock:
                    channel.last_error = str(exc)
                    channel.state = "crashed" if parked else "restarting"
                if parked:
                    log.error("channel %s crashed: %d failures within %g s, last: %s; start it again with: "
                              "tark channel start %s", name, len(failures), self._policy.period_s, exc, name)
                    return
                log.warning("channel %s failed (%s); restarting in %.2f s", name, exc, delay_s)
                restart_needed = True
                channel.stop.wait(delay_s)

    def _describe(self, channel: _Channel) -> dict[str, Any]:
        with self._lock:
            return {
                "name": channel.name,
                "display_name": channel.display_name,
                "state": channel.state,
                "worker_pid": channel.worker_pid,
                "polling": channel.plugin.has("channel_poll"),
                "poll_ms": channel.poll_ms,
                "polls": channel.polls,
                "webhooks": channel.webhooks,
                "inbound": channel.inbound,
                "restarts": channel.restarts,
                "last_error": channel.last_error,
                "started_at": channel.started_at,
                "inbox": [{"received_at": e.received_at, "source": e.source, **attrs.asdict(e.message)}
                          for e in list(channel.inbox)[-20:]],
            }
