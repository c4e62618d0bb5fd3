"""Live progress of long operations (a git clone), on a terminal only: nothing when stderr is not a terminal or
NO_COLOR / TERM=dumb is set, so logs and pipes never get cursor movement (docs/cli.md)."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from rich.console import Console

from policy.text import escape_control
from supervisor.cli.output import make_console, styles_enabled
from supervisor.sources import GitSource, Source


@contextlib.contextmanager
def live_status(first: str) -> Iterator[Callable[[str], None] | None]:
    """A one-line status on stderr updated in place; yields its update function, or None when not on a terminal."""
    if not styles_enabled(sys.stderr):
        yield None
        return
    with make_console(err=True).status(first) as status:
        yield lambda text: status.update(escape_control(text))


@contextlib.contextmanager
def compile_status(name: str, size: int) -> Iterator[None]:
    """While the embedded supervisor compiles a plugin's wasm (once per module: the cache keeps it)."""
    with live_status(f"Compiling {name} ({size / 2**20:.1f} MiB of wasm)..."):
        yield


@contextlib.contextmanager
def clone_progress(console: Console, source: Source) -> Iterator[Callable[[str], None] | None]:
    """For a git source: says it clones, then shows git's progress live on a terminal."""
    if not isinstance(source, GitSource):
        yield None
        return
    console.print("Cloning repository...")
    with live_status("Cloning repository...") as update:
        yield update
