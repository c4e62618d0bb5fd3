"""Finding the helper programs our Python dependencies install (wasm-tools, componentize-py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_console_script(name: str) -> str | None:
    """`name` installed next to this Python (a venv's bin/, found even when the venv is not activated), else
    on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)
