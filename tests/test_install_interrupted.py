"""Crash safety and concurrency of the registry, with real processes killed by SIGKILL.

Whatever point an install or update dies at, the registry afterwards holds either the previous or the new
version (with its data/ and .disabled), lists it, and the next registry operation removes the leftovers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.registry import JOURNAL_DIR, STAGING_DIR, TRASH_DIR, Registry
from supervisor.sources import parse_source
from supervisor.wasm_check import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
BIG_FILE_BYTES = 200 * 1024 * 1024  # under the 256 MiB tree cap; sparse, so cheap to create


def leftovers(root: Path) -> list[str]:
    found = []
    for name in (STAGING_DIR, TRASH_DIR, JOURNAL_DIR):
        directory = root / name
        if directory.is_dir():
            found.extend(f"{name}/{entry.name}" for entry in directory.iterdir())
    return found


def assert_installed(root: Path, version: str, *, data: str | None = None, disabled: bool = False) -> None:
    plugin = Registry(root).get("hello")
    assert plugin.manifest.plugin.version == version
    assert plugin.enabled is not disabled
    if data is not None:
        assert (plugin.data_dir / "storage.json").read_text() == data
    record = json.loads((plugin.directory / ".install.json").read_text())
    assert record["wasm_sha256"] == sha256_file(plugin.wasm_path)


def test_kill_during_copy_keeps_the_previous_version(plugins_root, make_plugin_dir, tmp_path, run_tark,
                                                      tark_argv) -> None:
    registry = Registry(plugins_root)
    registry.install(parse_source(str(make_plugin_dir(tmp_path / "v1", version="1.0.0"))))
    (plugins_root / "hello" / "data").mkdir()
    (plugins_root / "hello" / "data" / "storage.json").write_text('{"token": "keep me"}')

    v2 = make_plugin_dir(tmp_path / "v2", version="2.0.0")
    with open(v2 / "zz-big.bin", "wb") as handle:
        handle.truncate(BIG_FILE_BYTES)

    process = subprocess.Popen([*tark_argv, "plugin", "add", "--yes", "--force", str(v2)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged_big = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            candidates = list((plugins_root / STAGING_DIR).glob("*/tree/zz-big.bin"))
            if candidates and candidates[0].stat().st_size > 0:
                staged_big = candidates[0]
                break
            time.sleep(0.001)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL, "the install finished before it could be killed"
    assert staged_big is not None, "never saw the copy in progress"
    assert leftovers(plugins_root), "the killed install left no staging directory to clean"

    listed = run_tark("plugin", "list")
    assert listed.returncode == 0, listed.stderr
    assert "hello" in listed.stdout and "1.0.0" in listed.stdout
    assert_installed(plugins_root, "1.0.0", data='{"token": "keep me"}')
    assert leftovers(plugins_root) == []


# Runs one registry operation in a child process and kills it (os._exit) right after the named swap step.
CRASH_HELPER = """
import os, sys
from pathlib import Path
from supervisor.registry import Registry
from supervisor.sources import parse_source

root, operation, argument, crash_at = sys.argv[1:]

def hook(step):
    if step == crash_at:
        os._exit(86)

registry = Registry(Path(root), step_hook=hook)
if operation == "install":
    registry.install(parse_source(argument), force=True)
else:
    registry.update(argument)
sys.exit(0)
"""


def run_crashing(root: Path, operation: str, argument: str, crash_at: str) -> int:
    result = subprocess.run([sys.executable, "-c", CRASH_HELPER, str(root), operation, argument, crash_at],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 86), result.stderr
    return result.returncode


@pytest.mark.parametrize("crash_at, expected", [
    ("journal-written", "1.0.0"),
    ("old-moved", "1.0.0"),
    ("data-moved", "1.0.0"),
    ("new-in-place", "2.0.0"),
])
@pytest.mark.parametrize("operation", ["install", "update"])
def test_kill_between_the_renames_of_a_swap(plugins_root, make_plugin_dir, tmp_path, crash_at, expected,
                                            operation) -> None:
    src = make_plugin_dir(tmp_path / "src", version="1.0.0")
    registry = Registry(plugins_root)
    registry.install(parse_source(str(src)))
    registry.disable("hello")
    (plugins_root / "hello" / "data").mkdir()
    (plugins_root / "hello" / "data" / "storage.json").write_text("precious")
    make_plugin_dir(src, version="2.0.0")

    assert run_crashing(plugins_root, operation, str(src) if operation == "install" else "hello", crash_at) == 86
    assert (plugins_root / JOURNAL_DIR / "hello.json").exists()

    # An update keeps .disabled; a forced add installs the new version enabled.
    disabled = operation == "update" or expected == "1.0.0"
    assert_installed(plugins_root, expected, data="precious", disabled=disabled)
    assert leftovers(plugins_root) == []


def test_kill_during_a_first_install_leaves_nothing(plugins_root, make_plugin_dir, tmp_path) -> None:
    src = make_plugin_dir(tmp_path / "src")
    assert run_crashing(plugins_root, "install", str(src), "journal-written") == 86
    listing = Registry(plugins_root).list()
    assert listing.plugins == () and listing.problems == ()
    assert leftovers(plugins_root) == []


def test_concurrent_installs_never_corrupt_the_registry(plugins_root, make_plugin_dir, tmp_path, tark_argv) -> None:
    sources = [make_plugin_dir(tmp_path / "a", name="alpha"), make_plugin_dir(tmp_path / "b", name="beta"),
               make_plugin_dir(tmp_path / "h1", version="1.0.0"), make_plugin_dir(tmp_path / "h2", version="2.0.0")]
    commands = [[*tark_argv, "plugin", "add", "--yes", "--force", str(src)] for src in sources]
    commands += [[*tark_argv, "plugin", "add", "--yes", str(tmp_path / "h1")]]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = [(p.wait(timeout=60), *p.communicate()) for p in processes]

    assert [code for code, _, _ in results[:4]] == [0, 0, 0, 0], [err for _, _, err in results[:4]]
    plain_code, _, plain_err = results[4]
    assert plain_code == 0 or "Plugin 'hello' is already installed" in plain_err

    listing = Registry(plugins_root).list()
    assert [p.name for p in listing.plugins] == ["alpha", "beta", "hello"] and listing.problems == ()
    hello = listing.plugins[2]
    assert hello.manifest.plugin.version in ("1.0.0", "2.0.0")
    assert json.loads((hello.directory / ".install.json").read_text())["url"] in (
        str(tmp_path / "h1"), str(tmp_path / "h2"))
    assert leftovers(plugins_root) == []


def test_a_live_install_is_not_cleaned_up_by_another_process(plugins_root, make_plugin_dir, tmp_path) -> None:
    registry = Registry(plugins_root)
    with registry.stage(parse_source(str(make_plugin_dir(tmp_path / "src")))) as staged:
        Registry(plugins_root)  # another open runs recovery while we hold our staging directory
        assert staged.tree.is_dir()
        registry.commit(staged)
    assert Registry(plugins_root).get("hello")
    assert leftovers(plugins_root) == []
