"""The one error type of the OAuth package: a message the user can act on."""

from __future__ import annotations


class OAuthError(Exception):
    """A sign-in that cannot go on: bad configuration, a refused or malformed server answer, a timeout."""


MAX_QUOTED_CHARS = 500


def quoted(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """Server or plugin text made safe for a terminal: control characters escaped, long text cut."""
    safe = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)
    return safe if len(safe) <= limit else safe[:limit] + f"... ({len(safe) - limit} more characters)"
