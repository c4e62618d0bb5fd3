"""Shared fixtures: an isolated data dir, real tiny plugins (wasmtime.wat2wasm), real git repos, the CLI.

- Every test runs with TARK_DATA_DIR / XDG_DATA_HOME / TARK_CONFIG_DIR / TARK_CACHE_DIR under its tmp_path
  and a private git identity/config, so nothing touches the user's real files.
- `make_plugin_dir(dir, name=..., ...)` writes plugin.toml and a wat2wasm-built plugin.wasm.
- `make_git_repo(dir)` turns a directory into a committed git repo; `.url` is its file:// URL.
- `cli(*args)` runs `tark` in-process through click's CliRunner; `run_tark(*args)` runs the real script.
"""

from __future__ import annotations

import os
import subprocess
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import wasmtime
from click.testing import CliRunner, Result

REPO_ROOT = Path(__file__).resolve().parent.parent
TARK_SCRIPT = Path(sys.executable).parent / "tark"

MINIMAL_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dealloc") (param i32 i32)))
"""


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "tark-data"
    monkeypatch.setenv("TARK_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("TARK_CONFIG_DIR", str(tmp_path / "tark-config"))
    monkeypatch.setenv("TARK_CACHE_DIR", str(tmp_path / "tark-cache"))
    monkeypatch.delenv("TARK_LOG", raising=False)
    # unix socket paths are limited to ~107 bytes, so the runtime dir lives in a short temporary path
    runtime = Path(tempfile.mkdtemp(prefix="tark-rt-"))
    monkeypatch.setenv("TARK_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for kind in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{kind}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{kind}_EMAIL", "test@example.invalid")
    yield data
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def plugins_root(isolated_env: Path) -> Path:
    return isolated_env / "plugins"


@pytest.fixture(scope="session")
def valid_wasm() -> bytes:
    return bytes(wasmtime.wat2wasm(MINIMAL_WAT))


def manifest_text(name: str = "hello", version: str = "0.1.0", type: str = "tool", *,
                  description: str = "Says hello", wasm: str | None = None, extra: str = "",
                  capabilities: str = "") -> str:
    lines = ["[plugin]", f'name = "{name}"', f'version = "{version}"', f'type = "{type}"',
             f'description = "{description}"']
    if wasm is not None:
        lines.append(f'wasm = "{wasm}"')
    text = "\n".join(lines) + "\n" + extra + "\n"
    if capabilities:
        text += "[capabilities]\n" + capabilities + "\n"
    return text


MakePluginDir = Callable[..., Path]


@pytest.fixture
def make_plugin_dir(valid_wasm: bytes) -> MakePluginDir:
    """make_plugin_dir(dir, name=, version=, type=, wasm_bytes=valid|None(no file), manifest=raw text, ...)."""

    def make(directory: Path, name: str = "hello", version: str = "0.1.0", type: str = "tool", *,
             wasm_bytes: bytes | None | Any = ..., manifest: str | None = None, wasm_path: str = "plugin.wasm",
             files: dict[str, str | bytes] | None = None, **manifest_kwargs: Any) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            manifest = manifest_text(name, version, type,
                                     wasm=None if wasm_path == "plugin.wasm" else wasm_path, **manifest_kwargs)
        (directory / "plugin.toml").write_text(manifest)
        data = valid_wasm if wasm_bytes is ... else wasm_bytes
        if data is not None:
            (directory / wasm_path).parent.mkdir(parents=True, exist_ok=True)
            (directory / wasm_path).write_bytes(data)
        for rel, content in (files or {}).items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        return directory

    return make


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@attrs.frozen
class GitRepo:
    path: Path

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def tag(self, name: str) -> None:
        git(self.path, "tag", name)

    def branch(self, name: str) -> None:
        """Create and switch to branch `name`."""
        git(self.path, "checkout", "-q", "-b", name)

    def switch(self, name: str) -> None:
        git(self.path, "checkout", "-q", name)


@pytest.fixture
def make_git_repo() -> Callable[[Path], GitRepo]:
    """make_git_repo(dir): `git init` the (already filled) dir on branch main and commit everything."""

    def make(directory: Path) -> GitRepo:
        directory.mkdir(parents=True, exist_ok=True)
        git(directory, "init", "-q", "-b", "main")
        repo = GitRepo(directory)
        repo.commit("initial")
        return repo

    return make


@pytest.fixture
def cli() -> Callable[..., Result]:
    from supervisor.cli.main import build_cli

    app = build_cli()

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), input=input, prog_name="tark")

    return invoke


@pytest.fixture
def tark_argv() -> list[str]:
    """The command line that starts the real `tark` (the console script, else `python -m`)."""
    return [str(TARK_SCRIPT)] if TARK_SCRIPT.exists() else [sys.executable, "-m", "supervisor.cli.main"]


@pytest.fixture
def run_tark(tark_argv: list[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `tark` in a subprocess and wait for it."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*tark_argv, *args], cwd=cwd or REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ), check=False)

    return run


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """A private (0700) directory for worker endpoints."""
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def make_pool(tmp_path: Path, runtime_dir: Path):
    """`make_pool(settings=EngineSettings(), **WorkerPool kwargs)`: real WorkerPools over the real PluginHost,
    all closed (workers stopped) when the test ends."""
    from supervisor.host import PluginHost
    from supervisor.modules import ModuleCache
    from supervisor.workers import WorkerPool
    from worker.protocol import EngineSettings

    pools: list[WorkerPool] = []

    def make(settings: EngineSettings = EngineSettings(), **kwargs: Any) -> WorkerPool:
        pool = WorkerPool(runtime_dir, ModuleCache(tmp_path / "cache", settings), lambda p: PluginHost(p), **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()

