"""One channel operation each, over anything that offers the supervisor's call API (the embedded `Supervisor`, the
daemon's, or a `DaemonClient`): auth init + start on a kept instance, poll, webhook, send, stop.

tark's rules (ABI §3.3): optional exports are detected by exact type; when the manifest has `[oauth]` and
credentials are stored, `channel_auth_init` gets them before every operation, so an operation that is not run on
the channel's kept instance runs on an instance of its own (auth init, the call, then the instance is ended).
Credentials come from the project's `.tark/plugins/<id>/oauth.json` or the global file, decrypted when they are
an envelope (supervisor/channel_credentials.py).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Iterator, Protocol

import attrs

from policy.abi import CORE_SIGNATURES
from supervisor.channels.messages import (ChannelDataError, InboundMessage, SendResult, WebhookResponse,
                                          parse_channel_info, parse_inbound, parse_send_result,
                                          parse_webhook_response, send_request_json, split_text)
from supervisor.channel_credentials import CredentialsSource, default_source
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.call_api import CallResult

log = logging.getLogger(__name__)

FRESH = "fresh"
CALL_TIMEOUT_S = 30.0
# as the supervisor's `exports` reports them (lists): policy/abi.py's signatures
SIGNATURES: dict[str, tuple[list[str], list[str]]] = {
    name: (list(CORE_SIGNATURES[name][0]), list(CORE_SIGNATURES[name][1]))
    for name in ("channel_info", "channel_start", "channel_stop", "channel_auth_init", "channel_poll",
                 "channel_handle_webhook", "channel_send")
}


class ChannelError(Exception):
    """A channel operation that failed; the message says what the plugin or the user has to fix."""


class ChannelCallFailed(ChannelError):
    """The export did not complete (trap, limit, worker death...): the instance it ran on is gone."""


class ChannelApi(Protocol):
    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = FRESH) -> CallResult: ...

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]: ...

    def end_instance(self, name: str, instance: str) -> None: ...


@attrs.frozen
class ChannelPlugin:
    """What the host knows of one channel plugin at one moment: its ABI exports and its credentials."""

    name: str
    exports: frozenset[str]
    credentials: str | None = attrs.field(repr=False)

    def has(self, export: str) -> bool:
        return export in self.exports


def channel_plugin(registry: Registry, name: str) -> InstalledPlugin:
    plugin = registry.get(name)
    if plugin.manifest.plugin.type != "channel":
        raise ChannelError(f"Plugin '{name}' is a {plugin.manifest.plugin.type} plugin, not a channel")
    if not plugin.enabled:
        raise ChannelError(f"Plugin '{name}' is disabled; enable it with: tark plugin enable {name}")
    return plugin


def inspect(api: ChannelApi, registry: Registry, name: str, source: CredentialsSource | None = None) -> ChannelPlugin:
    """The channel's exports and credentials (from `source`: by default the cwd's project file, else the global
    one, with the passphrase from TARK_PLUGIN_PASSPHRASE)."""
    plugin = channel_plugin(registry, name)
    exported = api.exports(name)
    present = frozenset(export for export, signature in SIGNATURES.items() if exported.get(export) == signature)
    credentials = None
    if plugin.manifest.oauth is not None and "channel_auth_init" in present:
        credentials = (source if source is not None else default_source()).load(plugin)
    return ChannelPlugin(name=name, exports=present, credentials=credentials)


def _require(channel: ChannelPlugin, export: str) -> None:
    if not channel.has(export):
        raise ChannelError(f"Plugin does not export '{export}' function")


def _call(api: ChannelApi, channel: ChannelPlugin, export: str, args: list[str], instance: str) -> CallResult:
    result = api.call(channel.name, export, args, timeout_s=CALL_TIMEOUT_S, instance=instance)
    if result.error is not None:
        raise ChannelCallFailed(f"Function {export} failed ({result.error_kind}): {result.error}")
    return result


def _diagnostics(result: CallResult) -> str:
    return f" ({result.output})" if result.output else ""


def _output(result: CallResult, export: str) -> str:
    """The output of an export that writes a result; a negative return is tark's error message."""
    if result.ret is None or result.ret < 0 or result.output is None:
        verb = "returned" if export in ("channel_info", "channel_poll") else "failed with"
        raise ChannelError(f"Function {export} {verb} error code: {result.ret}{_diagnostics(result)}")
    return result.output


def auth_init(api: ChannelApi, channel: ChannelPlugin, instance: str) -> None:
    if channel.credentials is None:
        return
    result = _call(api, channel, "channel_auth_init", [channel.credentials], instance)
    if result.ret is None or result.ret < 0:
        raise ChannelError(f"Function channel_auth_init failed with error code: {result.ret}")


@contextlib.contextmanager
def operation_instance(api: ChannelApi, channel: ChannelPlugin, calls: int = 1) -> Iterator[str]:
    """A fresh instance for one operation of `calls` export calls: tark's "fresh instance plus auth init"."""
    if channel.credentials is None and calls == 1:
        yield FRESH
        return
    instance = f"op-{secrets.token_hex(6)}"
    try:
        auth_init(api, channel, instance)
        yield instance
    finally:
        with contextlib.suppress(Exception):
            api.end_instance(channel.name, instance)


def info(api: ChannelApi, channel: ChannelPlugin) -> tuple[str, str] | None:
    """(id, display_name), or None when the plugin has no channel_info."""
    if not channel.has("channel_info"):
        return None
    result = _call(api, channel, "channel_info", [], FRESH)
    return parse_channel_info(_output(result, "channel_info"))


def start(api: ChannelApi, channel: ChannelPlugin, instance: str) -> int | None:
    """Auth init + channel_start on the kept `instance` (fixes weakness 30); returns the worker's pid."""
    _require(channel, "channel_start")
    auth_init(api, channel, instance)
    result = _call(api, channel, "channel_start", [], instance)
    if result.ret is None or result.ret < 0:
        raise ChannelError(f"Channel start failed with error code: {result.ret}")
    return result.worker_pid


def stop(api: ChannelApi, channel: ChannelPlugin, instance: str) -> None:
    """channel_stop (if exported) on the kept instance, then end it. A failing stop is logged, not raised."""
    try:
        if channel.has("channel_stop"):
            result = _call(api, channel, "channel_stop", [], instance)
            if result.ret is None or result.ret < 0:
                log.warning("channel %s: Channel stop failed with error code: %s", channel.name, result.ret)
    except Exception as exc:  # noqa: BLE001 - stopping goes on whatever the plugin does
        log.warning("channel %s: %s", channel.name, exc)
    finally:
        with contextlib.suppress(Exception):
            api.end_instance(channel.name, instance)


@attrs.frozen
class PollResult:
    worker_pid: int | None
    messages: tuple[InboundMessage, ...]
    error: str | None  # a negative return or bad JSON: logged, and polling goes on (tark)


def poll(api: ChannelApi, channel: ChannelPlugin, instance: str) -> PollResult:
    result = _call(api, channel, "channel_poll", [], instance)
    try:
        messages = tuple(parse_inbound(_output(result, "channel_poll")))
    except (ChannelError, ChannelDataError) as exc:
        return PollResult(result.worker_pid, (), str(exc))
    return PollResult(result.worker_pid, messages, None)


def handle_webhook(api: ChannelApi, channel: ChannelPlugin, request_json: str) -> WebhookResponse:
    _require(channel, "channel_handle_webhook")
    with operation_instance(api, channel) as instance:
        result = _call(api, channel, "channel_handle_webhook", [request_json], instance)
    try:
        return parse_webhook_response(_output(result, "channel_handle_webhook"))
    except ChannelDataError as exc:
        raise ChannelError(str(exc)) from None


@attrs.frozen
class SendReport:
    conversation_id: str
    message_ids: tuple[str | None, ...]  # one per chunk
    chunk_bytes: tuple[int, ...]


def send(api: ChannelApi, channel: ChannelPlugin, conversation_id: str, text: str, *, message_id: str | None = None,
         is_final: bool = True, metadata_json: str = "") -> SendReport:
    """Send `text`; a final text over 1800 bytes goes as several sends, and only the first carries `message_id`."""
    _require(channel, "channel_send")
    for field, value in (("conversation", conversation_id), ("text", text), ("message id", message_id or ""),
                         ("metadata", metadata_json)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ChannelError(f"The {field} is not valid UTF-8 text") from None
    chunks = split_text(text) if is_final else [text]
    results: list[SendResult] = []
    with operation_instance(api, channel, len(chunks)) as instance:
        for index, chunk in enumerate(chunks):
            request = send_request_json(conversation_id, chunk, message_id if index == 0 else None, is_final,
                                        metadata_json)
            output = _output(_call(api, channel, "channel_send", [request], instance), "channel_send")
            try:
                outcome = parse_send_result(output)
            except ChannelDataError as exc:
                raise ChannelError(str(exc)) from None
            if not outcome.success:
                part = f" (part {index + 1} of {len(chunks)})" if len(chunks) > 1 else ""
                raise ChannelError(f"Channel '{channel.name}' could not send to {conversation_id}{part}: "
                                   f"{outcome.error or 'the plugin gave no reason'}")
            results.append(outcome)
    return SendReport(conversation_id, tuple(r.message_id for r in results),
                      tuple(len(c.encode("utf-8")) for c in chunks))
