"""Untrusted text made safe to print: control characters shown as escapes.

Manifests, plugin log lines, guest error messages and audit targets come from plugin authors. Printed raw, an
ESC sequence can clear or retitle the terminal, a carriage return can overprint the line before it (a key name
hiding the capability summary), a newline can forge a log line, and bidi overrides can reorder what is shown.
`escape_control` is the one function every command and log line uses for such text (docs/secrets-and-audit.md).
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI on some terminals), line/paragraph separators, the bidi
# embedding/override/isolate marks and the BOM / zero-width no-break space.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control character replaced by a visible escape (`\\x1b`, `\\r`, `\\u202e`).

    `keep_newlines` leaves `\\n` alone, for multi-line text of our own that embeds untrusted parts (an error
    message with a hint on its second line); untrusted single-line fields use the default."""
    return (_CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL).sub(_escape, text)


def escape_json_text(document: str) -> str:
    """JSON text with the characters `json.dumps(ensure_ascii=False)` leaves raw but terminals act on (DEL, C1,
    bidi controls, line separators) written as `\\uXXXX` escapes. Such characters only occur inside strings."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
