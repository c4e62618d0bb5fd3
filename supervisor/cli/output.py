"""Terminal and JSON output helpers shared by CLI commands (conventions: docs/cli.md).

- `--json` (`json_option`): stdout carries exactly one JSON document, on one line; human text (progress,
  prompts, notes) goes to stderr (`make_console(err=True)`), errors stay `Error: ...` on stderr with exit 1.
- Styles (bold, colour) only on a terminal and only without NO_COLOR (https://no-color.org) or TERM=dumb.

Light on purpose: the thin client (docs/performance.md) prints through these, so rich and the plugin model are
imported only by the helpers that need them (`make_console`, `plugin_json`)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, TextIO, TypeVar

import click

from policy.text import escape_control, escape_json_text

if TYPE_CHECKING:
    from rich.console import Console

    from supervisor.install_record import InstallRecord
    from supervisor.plugin import InstalledPlugin

DESCRIPTION_WIDTH = 40


def shown(text: str) -> str:
    """Untrusted text (manifest fields, plugin output, guest errors) as it may reach a terminal: one line, every
    control character escaped (docs/secrets-and-audit.md)."""
    return escape_control(text)


F = TypeVar("F", bound=Callable[..., Any])


def json_option(function: F) -> F:
    """The one `--json` flag of every command (parameter `as_json`)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout (notes go to stderr).")(function)


def styles_enabled(stream: TextIO) -> bool:
    """Escape sequences only for a terminal whose user did not opt out (NO_COLOR, TERM=dumb)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_console(err: bool = False) -> Console:
    """A console on stdout (stderr with `err`, e.g. the notes of a `--json` command): plain text (no markup,
    emoji codes, escapes or wrapping) unless styles are enabled."""
    import shutil

    from supervisor.cli.console import SafeConsole

    stream = sys.stderr if err else sys.stdout
    styled = styles_enabled(stream)
    width = shutil.get_terminal_size((200, 24)).columns if styled else 200
    return SafeConsole(file=stream, highlight=False, markup=False, emoji=False, soft_wrap=True, width=width,
                       force_terminal=styled, no_color=not styled, color_system="auto" if styled else None)


def header(console: Console, text: str) -> None:
    console.print(text, style="bold cyan")


def header_line(text: str) -> None:
    """A section header for commands that print with click: bold cyan only where styles are enabled."""
    click.echo(click.style(text, bold=True, fg="cyan") if styles_enabled(sys.stdout) else text)


def echo(message: Any = None, **kwargs: Any) -> None:
    """click.echo for text that may hold plugin output or manifest fields: control characters other than
    newlines escaped (docs/secrets-and-audit.md)."""
    click.echo(escape_control(message, keep_newlines=True) if isinstance(message, str) else message, **kwargs)


def print_json(document: Any) -> None:
    """The `--json` output: one compact JSON document on one line (non-ASCII kept, terminal controls as \\u
    escapes), so `json.loads(stdout)` and line-oriented tools both work."""
    click.echo(escape_json_text(json.dumps(document, ensure_ascii=False, separators=(",", ":"))))


echo_json_line = print_json  # one JSON document per line; `tark chat --json` prints one per reply


def warn(message: str) -> None:
    click.echo(f"Warning: {escape_control(message)}", err=True)  # one line: a key name may hold a newline


def cut(text: str, width: int = DESCRIPTION_WIDTH) -> str:
    text = escape_control(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def status_word(plugin: InstalledPlugin) -> str:
    return "enabled" if plugin.enabled else "disabled"


def plugin_json(plugin: InstalledPlugin, record: InstallRecord | None, *, full: bool) -> dict[str, Any]:
    """The JSON view of a plugin. `full` adds author, capabilities, paths and warnings (for `info`)."""
    from supervisor.install_record import record_to_json

    info = plugin.manifest.plugin
    doc: dict[str, Any] = {
        "id": plugin.name,
        "version": info.version,
        "type": info.type,
        "status": status_word(plugin),
        "enabled": plugin.enabled,
        "description": info.description,
    }
    if full:
        caps = plugin.manifest.capabilities
        doc.update(
            name=info.name,
            author=info.author,
            homepage=info.homepage,
            license=info.license,
            min_tark_version=info.min_tark_version,
            api_version=info.api_version,
            capabilities={
                "storage": caps.storage,
                "http": list(caps.http),
                "env": list(caps.env),
                "fs_read": list(caps.fs_read),
                "shell": caps.shell,
            },
            paths={
                "install": str(plugin.directory),
                "wasm": str(plugin.wasm_path),
                "data": str(plugin.data_dir),
            },
            warnings=list(plugin.warnings),
        )
    doc["directory"] = str(plugin.directory)
    doc["source"] = record_to_json(record) if record is not None else None
    return doc
