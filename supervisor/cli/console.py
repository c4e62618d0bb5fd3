"""The rich console of tables and headers; imported by `output.make_console` only when a command draws one."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from policy.text import escape_control


class SafeConsole(Console):
    """A rich Console that escapes control characters in every string it renders (table cells included), so
    no manifest field or plugin output can move the cursor, clear the screen or overprint a line."""

    def render_str(self, text: str, **kwargs: Any):  # type: ignore[override]
        return super().render_str(escape_control(text), **kwargs)
