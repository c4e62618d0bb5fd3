"""Building components for tests: examples/build.py's wasm-tools wrapping of canonical-ABI core WAT."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _build_module():
    spec = importlib.util.spec_from_file_location("examples_build", REPO / "examples" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_module()


def build_examples(destination: Path) -> list[Path]:
    """A copy of examples/ with every plugin built (core modules and components)."""
    shutil.copytree(REPO / "examples", destination, ignore=shutil.ignore_patterns("*.wasm", "__pycache__"))
    return BUILD.build_examples(destination)


def component_of(core_wat: str, world: str) -> bytes:
    """A component of `world` (wit/tark.wit) from the WAT of its canonical-ABI core module."""
    return BUILD.wasm_of_wat(f";; world: {world}\n{core_wat}")
