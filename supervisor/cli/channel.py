"""`tark channel start|stop|send|status`: channel plugins, run by the supervisor daemon.

start/stop/status talk to the daemon (its poll loops and webhook listener outlive any CLI process); without a
daemon they fail with the hint `tark supervisor start`. `send` works either way (a fresh instance, tark's rule).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from supervisor import paths
from supervisor.channels.client import channel_request
from supervisor.channels.defaults import DEFAULT_POLL_MS
from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import echo, header, json_option, make_console, print_json
from supervisor.control_client import DaemonClient, running_client

NO_DAEMON = ("No supervisor daemon is running; channels run in the daemon. Start it with: tark supervisor start"
             " (see tark supervisor start --help for --webhook-port)")
INBOX_SHOWN = 5


@click.group("channel")
def channel_group() -> None:
    """Run channel plugins (in the daemon) and send messages."""


def _daemon() -> DaemonClient:
    client = running_client(paths.runtime_dir())
    if client is None:
        raise click.ClickException(NO_DAEMON)
    return client


@channel_group.command("start")
@click.argument("name")
@click.option("--poll-ms", type=click.IntRange(min=1), default=DEFAULT_POLL_MS, show_default=True,
              help="Interval between channel_poll calls.")
@json_option
def start_command(name: str, poll_ms: int, as_json: bool) -> None:
    """Start channel NAME in the daemon.

    Runs channel_auth_init and channel_start, then its poll loop and webhook.
    """
    project, passphrase = _credentials_for_daemon(name)
    with _daemon() as client:
        document = channel_request(client, "channel_start", name, poll_ms=poll_ms, project=project,
                                   passphrase=passphrase)
    if as_json:
        print_json(document)
        return
    (channel,) = document["channels"]
    echo(f"✅ Started channel {name} (worker pid {channel['worker_pid']})")
    _echo_endpoints(channel, document["webhook"])


@channel_group.command("stop")
@click.argument("name")
@json_option
def stop_command(name: str, as_json: bool) -> None:
    """Stop channel NAME in the daemon.

    Ends its poll loop, calls channel_stop and drops its instance.
    """
    with _daemon() as client:
        document = channel_request(client, "channel_stop", name)
    if as_json:
        print_json(document)
        return
    echo(f"✅ Stopped channel {name}")


@channel_group.command("status")
@click.argument("name", required=False)
@json_option
def status_command(name: str | None, as_json: bool) -> None:
    """Show each channel started in the daemon.

    State, webhook URL, polls, inbound messages, restarts and errors.
    """
    client = running_client(paths.runtime_dir())
    if client is None:
        if name is not None:
            raise click.ClickException(NO_DAEMON)
        if as_json:
            print_json({"daemon": False, "webhook": None, "channels": []})
        else:
            echo(NO_DAEMON)
        return
    with client:
        document = channel_request(client, "channel_status", name or "")
    if as_json:
        print_json({"daemon": True, **document})
        return
    console = make_console()
    header(console, "=== Channels ===")
    webhook = document["webhook"]
    console.print(f"Webhooks: {webhook['url']}" if webhook["url"] else f"Webhooks: not served ({webhook['error']})")
    if not document["channels"]:
        console.print("No channels started. Start one with: tark channel start <plugin>")
    for channel in document["channels"]:
        console.print("")
        console.print(f"{channel['name']} ({channel['display_name']}): {channel['state']}"
                      + (f", worker pid {channel['worker_pid']}" if channel["worker_pid"] else ""))
        if channel["webhook_url"]:
            console.print(f"  Webhook:  {channel['webhook_url']}")
        polling = f"every {channel['poll_ms']} ms, {channel['polls']} polls" if channel["polling"] else "no channel_poll"
        console.print(f"  Polling:  {polling}")
        console.print(f"  Webhooks: {channel['webhooks']}   Inbound: {channel['inbound']}   "
                      f"Restarts: {channel['restarts']}")
        if channel["last_error"]:
            console.print(f"  Last error: {channel['last_error']}")
        for entry in channel["inbox"][-INBOX_SHOWN:]:
            when = datetime.datetime.fromtimestamp(entry["received_at"]).strftime("%H:%M:%S")
            console.print(f"  {when} [{entry['source']}] {entry['conversation_id']}/{entry['user_id']}: "
                          f"{_one_line(entry['text'])}")


@channel_group.command("send")
@click.argument("name")
@click.argument("text")
@click.option("--conversation", "conversation_id", required=True, help="The conversation (chat, channel) to send to.")
@click.option("--message-id", default=None, help="The message this text belongs to (edits, streaming).")
@click.option("--not-final", is_flag=True, help="A partial text (is_final=false): sent as one piece, not split.")
@click.option("--metadata", "metadata_json", default="", callback=lambda _c, _p, v: _check_metadata(v),
              help="A JSON document passed to the plugin as metadata_json.")
@json_option
def send_command(name: str, text: str, conversation_id: str, message_id: str | None, not_final: bool,
                 metadata_json: str, as_json: bool) -> None:
    """Send TEXT to a conversation through channel NAME.

    Final texts over 1800 bytes go in parts.
    """
    from supervisor.channels import operations as ops  # only `send` runs a channel plugin from this process
    from supervisor.cli.passphrase import cli_source
    from supervisor.registry import Registry

    registry = Registry(paths.plugins_dir())
    with open_supervisor() as supervisor:
        channel = ops.inspect(supervisor, registry, name, cli_source()[0])
        report = ops.send(supervisor, channel, conversation_id, text, message_id=message_id, is_final=not not_final,
                          metadata_json=metadata_json)
    if as_json:
        print_json({"channel": name, "conversation_id": report.conversation_id,
                    "message_ids": list(report.message_ids), "chunk_bytes": list(report.chunk_bytes)})
        return
    first = report.message_ids[0]
    parts = f" in {len(report.message_ids)} parts" if len(report.message_ids) > 1 else ""
    echo(f"✅ Sent to {conversation_id}{parts}" + (f" (message {first})" if first is not None else ""))


def _credentials_for_daemon(name: str) -> tuple[str, str]:
    """The project directory and, when the channel's credentials file is encrypted, its passphrase (asked here, on
    the user's terminal, and checked before the daemon gets it). The daemon keeps both for the channel's life."""
    from supervisor.cli.passphrase import cli_source  # the envelope's crypto: only when a channel starts
    from supervisor.registry import Registry

    source, asked = cli_source()
    plugin = Registry(paths.plugins_dir()).get(name)
    if plugin.manifest.plugin.type == "channel" and plugin.manifest.oauth is not None:
        source.load(plugin)
    return str(source.project), asked.value or ""


def _check_metadata(text: str) -> str:
    if text:
        try:
            json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON ({exc})") from None
    return text


def _echo_endpoints(channel: dict[str, Any], webhook: dict[str, Any]) -> None:
    if channel["webhook_url"]:
        echo(f"Webhook: {channel['webhook_url']}")
    else:
        echo(f"Webhook: not served ({webhook['error']})")
    echo(f"Polling: every {channel['poll_ms']} ms" if channel["polling"] else "Polling: no channel_poll export")


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
