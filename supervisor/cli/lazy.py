"""A click group whose commands are imported only when one of them runs (click's documented LazyGroup pattern).

`tark --help` and `tark plugin --help` list their commands from the one-line help kept next to each entry, so
listing imports nothing; running `tark plugin call` imports supervisor/cli/call.py and what it needs, nothing
else (docs/performance.md, "Thin client"). tests/test_thin_client.py checks that each kept line is still the
first sentence of its command's own help.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Sequence

import click


class LazyCommand(NamedTuple):
    """One command of a group, not yet imported. (A NamedTuple: attrs is not on the thin client's path.)"""

    name: str
    target: str  # "package.module:attribute", the click command object
    help: str  # the first sentence of the command's help, listed without importing it

    def load(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group of `LazyCommand`s (besides any commands added the usual way)."""

    def __init__(self, *args: Any, lazy: Sequence[LazyCommand] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = {entry.name: entry for entry in lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy:
            command = self.lazy[cmd_name].load()
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                rows.append((name, click.Command(name, help=self.lazy[name].help).get_short_help_str(limit)))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
