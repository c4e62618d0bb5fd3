"""JSON text exactly as tark (serde_json) writes it for a guest: see docs/architecture.md, "JSON handed to guests".

Compact (no spaces), keys in the order the caller built them (tark's struct field order), non-ASCII left as UTF-8
and only `"`, `\\` and U+0000-U+001F escaped (`\\n \\r \\t \\b \\f`, else `\\u00xx` lowercase). Python's encoder
with these settings writes the same bytes as serde_json; DEL, U+2028 and U+2029 stay raw in both.
"""

import json
from typing import Any


def dumps(value: Any) -> str:
    """The JSON text tark would hand a guest for `value` (dicts keep their insertion order)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps_bytes(value: Any) -> bytes:
    return dumps(value).encode("utf-8")
