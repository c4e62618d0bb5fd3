"""What a capability handler answers: the ABI code and the bytes to write at the guest's ret_ptr."""

from __future__ import annotations

import json
from typing import Any

import attrs

# tark core ABI codes (tark-core-abi.md §1)
FAILED = -1  # read/write failure, or a refused operation that has no "denied" code (storage)
DENIED = -2  # capability not granted (http, ws.connect, env, fs)
READ_ERROR = -3  # fs.read could not read the file


@attrs.frozen
class Outcome:
    code: int
    data: bytes = b""

    @classmethod
    def written(cls, data: bytes) -> "Outcome":
        return cls(len(data), data)


def tark_json(value: Any) -> bytes:
    """JSON the way tark's serde maps print it: compact, keys sorted, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
