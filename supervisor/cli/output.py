"""Terminal and JSON output helpers shared by CLI commands."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

import click
from rich.console import Console

from supervisor.install_record import InstallRecord, record_to_json
from supervisor.plugin import InstalledPlugin

DESCRIPTION_WIDTH = 40


def make_console() -> Console:
    """A console on the current stdout; plain text (no markup, emoji codes or wrapping) when not a tty."""
    stream = sys.stdout
    is_tty = stream.isatty()
    width = shutil.get_terminal_size((200, 24)).columns if is_tty else 200
    return Console(file=stream, highlight=False, markup=False, emoji=False, soft_wrap=True, width=width,
                   force_terminal=None if is_tty else False)


def header(console: Console, text: str) -> None:
    console.print(text, style="bold cyan")


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def cut(text: str, width: int = DESCRIPTION_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def status_word(plugin: InstalledPlugin) -> str:
    return "enabled" if plugin.enabled else "disabled"


def plugin_json(plugin: InstalledPlugin, record: InstallRecord | None, *, full: bool) -> dict[str, Any]:
    """The JSON view of a plugin. `full` adds author, capabilities, paths and warnings (for `info`)."""
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
