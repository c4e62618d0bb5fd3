"""`tark chat --provider NAME [--model M] [--system TEXT] [--json] [--no-stream] [--verbose] [MESSAGE...]`: one
reply, or a simple REPL. Replies are printed as they arrive where the provider's mode can stream."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import click

from supervisor import paths
from supervisor.chat.provider import ChatProvider, open_provider
from supervisor.chat.selection import providers_line, select_provider
from supervisor.chat.session import Conversation
from supervisor.chat.types import ChatError, ChatReply, ModelApiLimits
from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import echo, echo_json_line, warn
from supervisor.credentials import CredentialsError
from supervisor.registry import Registry
from supervisor.call_api import CallRefused

# what ends one turn of the REPL with a message instead of ending the REPL
TURN_ERRORS = (ChatError, CallRefused, CredentialsError)
EXIT_COMMANDS = ("/exit", "/quit")
RESET_COMMAND = "/reset"


@click.command("chat")
@click.option("--provider", "provider_name", metavar="NAME",
              help="Provider plugin id, or the id of a provider a plugin contributes.")
@click.option("--model", metavar="M", help="Model id (default: the provider's first model; for auth-only "
                                           "providers gpt-4, or gemini-2.0-flash with Cloud Code Assist).")
@click.option("--system", metavar="TEXT", help="System prompt sent first in every turn.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each reply as one JSON line: provider, model, text, usage, finish_reason, mode.")
@click.option("--no-stream", "no_stream", is_flag=True,
              help="Ask the model API for the whole reply at once instead of a stream (for scripts).")
@click.option("--verbose", is_flag=True, help="After each reply, print its token usage on stderr.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001),
              help="Deadline of each plugin call and of each model API reply, seconds (default: the plugin's "
                   "call_timeout_s limit; 120 s for a model API reply).")
@click.argument("message", nargs=-1)
def chat_command(provider_name: str | None, model: str | None, system: str | None, as_json: bool,
                 no_stream: bool, verbose: bool, timeout_s: float | None, message: tuple[str, ...]) -> None:
    """Chat with a provider plugin. With MESSAGE: print one reply, streamed as it arrives. Without: a REPL
    reading lines from stdin (history kept; /reset clears it, /exit or /quit or end of input leaves)."""
    plugins = Registry(paths.plugins_dir()).list().plugins
    if not provider_name:
        raise click.UsageError(f"Missing option '--provider'.\n{providers_line(plugins)}")
    plugin = select_provider(plugins, provider_name)
    limits = model_api_limits(timeout_s)
    with open_supervisor() as api, open_provider(api, plugin, warn=warn, timeout_s=timeout_s,
                                                 limits=limits) as provider:
        conversation = Conversation(provider, model or provider.default_model, system)
        turn = Turn(conversation, plugin.name, as_json=as_json, stream=not no_stream, verbose=verbose)
        if message:
            turn.run(" ".join(message))
        else:
            _repl(conversation, turn)


def model_api_limits(timeout_s: float | None) -> ModelApiLimits:
    defaults = ModelApiLimits()
    return defaults if timeout_s is None else attrs.evolve(defaults, total_timeout_s=timeout_s)


class Turn:
    """One question and its reply on stdout: streamed piece by piece as it arrives (unless --json or
    --no-stream), else printed whole; with --verbose, the usage on stderr."""

    def __init__(self, conversation: Conversation, name: str, *, as_json: bool, stream: bool, verbose: bool) -> None:
        self.conversation = conversation
        self.name = name
        self.as_json = as_json
        self.stream = stream
        self.verbose = verbose
        self._streamed = False

    def _piece(self, text: str) -> None:
        if not self.as_json:
            echo(text, nl=False)  # click.echo flushes: the piece shows now
            self._streamed = True

    def run(self, text: str) -> None:
        self._streamed = False
        try:
            reply = self.conversation.send(text, self._piece if self.stream else None)
        finally:
            if self._streamed:
                echo()  # end the streamed line, also when the stream broke off (the error follows on stderr)
        if self.as_json:
            echo_json_line(reply_json(reply, self.name, self.conversation.model, self.conversation.provider))
        elif not self._streamed:
            echo(reply.text)
        if self.verbose:
            echo(usage_line(reply), err=True)


def usage_line(reply: ChatReply) -> str:
    if reply.usage is None:
        return "Usage: not reported by the provider"
    usage = reply.usage
    finish = f", finish reason {reply.finish_reason}" if reply.finish_reason else ""
    return (f"Usage: {usage.input_tokens} input tokens, {usage.output_tokens} output tokens, "
            f"{usage.input_tokens + usage.output_tokens} total{finish}")


def _repl(conversation: Conversation, turn: Turn) -> None:
    name = turn.name
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
            turn.run(text)
        except TURN_ERRORS as exc:
            echo(f"Error: {exc}", err=True)


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
