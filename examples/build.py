"""Compile every examples/*/plugin.wat to plugin.wasm next to it (wasmtime's WAT parser; no toolchain needed).

    .venv/bin/python examples/build.py          # or: from examples.build import build_examples
"""

from __future__ import annotations

import sys
from pathlib import Path

import wasmtime

EXAMPLES_DIR = Path(__file__).resolve().parent


def build_examples(examples_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Write plugin.wasm for each example with a plugin.wat; returns the plugin directories built."""
    built = []
    for wat in sorted(examples_dir.glob("*/plugin.wat")):
        try:
            wasm = wasmtime.wat2wasm(wat.read_text())
        except wasmtime.WasmtimeError as exc:
            raise SystemExit(f"{wat}: {exc}") from None
        (wat.parent / "plugin.wasm").write_bytes(bytes(wasm))
        built.append(wat.parent)
    return built


if __name__ == "__main__":
    for directory in build_examples(Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLES_DIR):
        print(f"built {directory / 'plugin.wasm'}")
