"""The dependency rule of design.md, checked on the source: policy imports nothing of ours and does no I/O;
worker never imports supervisor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"policy", "supervisor", "worker"}
IO_MODULES = {"zmq", "wasmtime", "httpx", "psutil", "socket", "subprocess", "sqlite3", "websockets", "multiprocess",
              "multiprocessing", "shutil", "tempfile", "fcntl", "platformdirs", "threading"}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("policy"), ids=lambda p: str(p.relative_to(ROOT)))
def test_policy_imports_nothing_of_ours_and_no_io(path):
    modules = imported_modules(path)
    top = {m.split(".")[0] for m in modules}
    assert not (top & {"supervisor", "worker"}), f"{path} imports {top & {'supervisor', 'worker'}}"
    assert not (top & IO_MODULES), f"{path} imports I/O modules {top & IO_MODULES}"
    text = path.read_text()
    assert "open(" not in text.replace("urlopen(", ""), f"{path} opens files"


@pytest.mark.parametrize("path", sources("worker"), ids=lambda p: str(p.relative_to(ROOT)))
def test_worker_never_imports_supervisor(path):
    assert not any(m.split(".")[0] == "supervisor" for m in imported_modules(path))
