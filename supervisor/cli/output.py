"""Terminal and JSON output helpers shared by CLI commands.

Light on purpose: the thin client (docs/performance.md) prints through these, so rich and the plugin model are
imported only by the helpers that need them (`make_console`, `plugin_json`)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

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


def make_console() -> Console:
    """A console on the current stdout; plain text (no markup, emoji codes or wrapping) when not a tty."""
    import shutil

    from supervisor.cli.console import SafeConsole

    stream = sys.stdout
    is_tty = stream.isatty()
    width = shutil.get_terminal_size((200, 24)).columns if is_tty else 200
    return SafeConsole(file=stream, highlight=False, markup=False, emoji=False, soft_wrap=True, width=width,
                   force_terminal=None if is_tty else False)


def header(console: Console, text: str) -> None:
    console.print(text, style="bold cyan")


def echo(message: Any = None, **kwargs: Any) -> None:
    """click.echo for text that may hold plugin output or manifest fields: control characters other than
    newlines escaped (docs/secrets-and-audit.md)."""
    click.echo(escape_control(message, keep_newlines=True) if isinstance(message, str) else message, **kwargs)


def echo_json_line(document: Any) -> None:
    """One compact JSON document on one line (non-ASCII kept, terminal controls as \\u escapes)."""
    click.echo(escape_json_text(json.dumps(document, ensure_ascii=False)))


def warn(message: str) -> None:
    click.echo(f"Warning: {escape_control(message)}", err=True)  # one line: a key name may hold a newline


def print_json(document: Any) -> None:
    click.echo(escape_json_text(json.dumps(document, indent=2, ensure_ascii=False)))


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
