"""`tark chat --provider NAME [--model M] [--system TEXT] [--json] [MESSAGE...]`: one reply, or a simple REPL."""

from __future__ import annotations

import sys
from typing import Any

import click

from supervisor import paths
from supervisor.chat.provider import ChatProvider, open_provider
from supervisor.chat.selection import providers_line, select_provider
from supervisor.chat.session import Conversation
from supervisor.chat.types import ChatError, ChatReply
from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import echo, echo_json_line, warn
from supervisor.control import ControlError
from supervisor.credentials import CredentialsError
from supervisor.registry import Registry
from supervisor.supervisor import CallRefused

# what ends one turn of the REPL with a message instead of ending the REPL
TURN_ERRORS = (ChatError, CallRefused, CredentialsError)
EXIT_COMMANDS = ("/exit", "/quit")
RESET_COMMAND = "/reset"


def register(cli: click.Group) -> None:
    cli.add_user_errors(ChatError, CallRefused, ControlError, CredentialsError)  # type: ignore[attr-defined]
    cli.add_command(chat_command)


@click.command("chat")
@click.option("--provider", "provider_name", metavar="NAME",
              help="Provider plugin id, or the id of a provider a plugin contributes.")
@click.option("--model", metavar="M", help="Model id (default: the provider's first model, gpt-4 for "
                                           "OpenAI-compatible auth-only providers).")
@click.option("--system", metavar="TEXT", help="System prompt sent first in every turn.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each reply as one JSON line: provider, model, text, usage, finish_reason, mode.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001),
              help="Deadline of each plugin call, seconds (default: the plugin's call_timeout_s limit).")
@click.argument("message", nargs=-1)
def chat_command(provider_name: str | None, model: str | None, system: str | None, as_json: bool,
                 timeout_s: float | None, message: tuple[str, ...]) -> None:
    """Chat with a provider plugin. With MESSAGE: print one reply. Without: a REPL reading lines from stdin
    (history kept; /reset clears it, /exit or /quit or end of input leaves)."""
    plugins = Registry(paths.plugins_dir()).list().plugins
    if not provider_name:
        raise click.UsageError(f"Missing option '--provider'.\n{providers_line(plugins)}")
    plugin = select_provider(plugins, provider_name)
    with open_supervisor() as api, open_provider(api, plugin, warn=warn, timeout_s=timeout_s) as provider:
        conversation = Conversation(provider, model or provider.default_model, system)
        if message:
            _print_reply(conversation.send(" ".join(message)), plugin.name, conversation, as_json)
        else:
            _repl(conversation, plugin.name, as_json)


def _repl(conversation: Conversation, name: str, as_json: bool) -> None:
    echo(f"Chatting with {name} (model {conversation.model}, {conversation.provider.mode} mode). "
               f"{RESET_COMMAND} clears the conversation, {EXIT_COMMANDS[0]} quits.", err=True)
    while True:
        echo("> ", nl=False)
        line = sys.stdin.readline()  # Ctrl-C raises KeyboardInterrupt: tark exits 130 (cli/main.py)
        if not line:  # end of input
            echo()
            return
        text = line.strip()
        if not text:
            continue
        if text in EXIT_COMMANDS:
            return
        if text == RESET_COMMAND:
            conversation.reset()
            echo("Conversation cleared.")
            continue
        try:
            reply = conversation.send(text)
        except TURN_ERRORS as exc:
            echo(f"Error: {exc}", err=True)
            continue
        _print_reply(reply, name, conversation, as_json)


def _print_reply(reply: ChatReply, name: str, conversation: Conversation, as_json: bool) -> None:
    if as_json:
        echo_json_line(reply_json(reply, name, conversation.model, conversation.provider))
    else:
        echo(reply.text)


def reply_json(reply: ChatReply, name: str, model: str, provider: ChatProvider) -> dict[str, Any]:
    return {
        "provider": name,
        "model": model,
        "text": reply.text,
        "usage": reply.usage.to_json() if reply.usage else None,
        "finish_reason": reply.finish_reason,
        "mode": provider.mode,
        "worker_pid": reply.worker_pid,
    }
