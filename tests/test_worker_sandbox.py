"""The worker is locked down before it runs guest code, with real worker processes read through /proc.

Workers hold no secrets (the fork server they come from is exec'd with a scrubbed environment, so not even
/proc/<pid>/environ shows the supervisor's), keep no fd the fork server handed down, run with no_new_privs, no core
dumps, a small open-files limit and an address-space cap; a memory bomb ends at the store cap (or the OS cap) and
the worker lives on; a lock-down step that cannot be applied is logged as a warning, once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.forkserver import ENV_ALLOWED
from supervisor.plugin import InstalledPlugin
from supervisor.workers import WorkerLimits
from lockdown_entries import run_without_landlock
from wasm_fixtures import make_guest
from worker import protocol

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BODY = """
  (func (export "status") (result i32) (i32.const 7))
  ;; grows memory by $step pages until memory.grow fails, touching each new block; returns the final size in pages
  (func $bomb (export "bomb") (param $step i32) (result i32)
    (block $done (loop $l
      (br_if $done (i32.eq (memory.grow (local.get $step)) (i32.const -1)))
      (i32.store (i32.mul (i32.sub (memory.size) (i32.const 1)) (i32.const 65536)) (i32.const 1))
      (br $l)))
    (memory.size))
  (func (export "bomb_64") (result i32) (call $bomb (i32.const 64)))
  (func (export "bomb_256") (result i32) (call $bomb (i32.const 256)))
"""


@pytest.fixture
def plugin(tmp_path: Path) -> InstalledPlugin:
    return make_guest(tmp_path / "probe", BODY)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode().partition("=")[::2] for entry in raw.split(b"\0") if entry)


def limits_of(pid: int) -> dict[str, str]:
    """/proc/<pid>/limits as {name: soft limit}."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def test_workers_and_their_fork_server_hold_no_secrets(tmp_path: Path) -> None:
    # A fresh supervisor process with a secret in its environment: the fork server is launched by it.
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from supervisor.host import PluginHost
        from supervisor.modules import ModuleCache
        from supervisor.workers import WorkerPool
        from wasm_fixtures import make_guest

        tmp = Path({str(tmp_path)!r})
        (tmp / "run").mkdir(mode=0o700)
        plugin = make_guest(tmp / "probe", '(func (export "status") (result i32) (i32.const 7))')
        with WorkerPool(tmp / "run", ModuleCache(tmp / "cache"), lambda p: PluginHost(p)) as pool:
            outcome = pool.call(plugin, "status", [], None)
            pid = outcome.worker_pid
            server = int(Path(f"/proc/{{pid}}/stat").read_text().rpartition(")")[2].split()[1])
            print(json.dumps({{
                "ret": outcome.ret,
                "worker": Path(f"/proc/{{pid}}/environ").read_bytes().decode(),
                "server": Path(f"/proc/{{server}}/environ").read_bytes().decode(),
            }}))
    """)
    env = dict(os.environ, TARK_TEST_SECRET="hunter2-token", GITHUB_TOKEN="ghp_secret",
               PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["ret"] == 7
    for who in ("worker", "server"):
        assert "hunter2-token" not in seen[who] and "ghp_secret" not in seen[who], who
        names = {entry.partition("=")[0] for entry in seen[who].split("\0") if entry}
        assert "PATH" in names
        assert all(ENV_ALLOWED.fullmatch(name) for name in names), names


def test_workers_of_this_process_see_only_allowed_variables(make_pool, plugin) -> None:
    pid = make_pool().call(plugin, "status", [], None).worker_pid
    names = set(environ_of(pid))
    assert names and all(ENV_ALLOWED.fullmatch(name) for name in names), names
    assert "TARK_DATA_DIR" in os.environ and "TARK_DATA_DIR" not in names


def test_workers_are_locked_down_before_guest_code(make_pool, plugin) -> None:
    pool = make_pool(limits=lambda p: WorkerLimits(memory_limit_bytes=64 * MIB, os_memory_limit_bytes=768 * MIB,
                                                   open_files_limit=48))
    pid = pool.call(plugin, "status", [], None).worker_pid
    status = Path(f"/proc/{pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    limits = limits_of(pid)
    assert limits["Max core file size"] == "0"
    assert limits["Max address space"] == str(768 * MIB)
    assert limits["Max open files"] == "48"


def test_workers_keep_no_fd_the_fork_server_handed_down(make_pool, plugin) -> None:
    pid = make_pool().call(plugin, "status", [], None).worker_pid
    server = parent_of(pid)
    server_pipes = {os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(f"/proc/{server}/fd")}
    links = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    extra = {fd: link for fd, link in links.items() if fd > 2}
    assert not [link for link in extra.values() if link.startswith("pipe:")], extra  # alive/tracker/sentinel pipes
    assert not (set(extra.values()) & {link for link in server_pipes if link.startswith(("pipe:", "socket:"))})


def test_a_memory_bomb_ends_at_the_store_cap_and_the_worker_lives_on(make_pool, plugin) -> None:
    pool = make_pool(limits=lambda p: WorkerLimits(memory_limit_bytes=48 * MIB))
    bomb = pool.call(plugin, "bomb_64", [], None)
    assert bomb.ok and bomb.ret * 65536 <= 48 * MIB and bomb.ret * 65536 > 48 * MIB - 64 * 65536
    after = pool.call(plugin, "status", [], None)
    assert (after.ret, after.worker_pid) == (7, bomb.worker_pid)


def test_the_os_memory_cap_holds_when_the_store_cap_is_set_too_high(make_pool, plugin) -> None:
    pool = make_pool(limits=lambda p: WorkerLimits(memory_limit_bytes=4096 * MIB, os_memory_limit_bytes=512 * MIB))
    bomb = pool.call(plugin, "bomb_256", [], None)
    assert bomb.ok and bomb.ret * 65536 < 512 * MIB  # memory.grow failed at the address-space cap: no trap, no abort
    after = pool.call(plugin, "status", [], None)
    assert (after.ret, after.worker_pid) == (7, bomb.worker_pid)


def test_a_lock_down_step_that_cannot_apply_is_logged_once(make_pool, plugin, tmp_path: Path, caplog) -> None:
    # An RLIMIT_AS too small for even the engine's guard region cannot apply: the worker runs without it.
    pool = make_pool(limits=lambda p: WorkerLimits(os_memory_limit_bytes=128 * 1024))
    with caplog.at_level(logging.WARNING, logger="supervisor.workers"):
        for _ in range(2):
            assert pool.call(plugin, "status", [], None).ok
            pool.stop(plugin.name)
    warnings = [r.getMessage() for r in caplog.records if "sandbox degraded" in r.getMessage()]
    assert warnings == [
        "worker sandbox degraded: RLIMIT_AS of 131072 bytes not applied: the engine reserves 65536 bytes"
        " of address space per linear memory"
    ]


def test_a_layer_the_kernel_lacks_is_logged_once_and_not_reported_active(make_pool, plugin, caplog) -> None:
    pool = make_pool(worker_entry=run_without_landlock)
    with caplog.at_level(logging.WARNING, logger="supervisor.workers"):
        for _ in range(2):
            assert pool.call(plugin, "status", [], None).ok
            (status,) = pool.status()
            assert "landlock" not in status.layers and "seccomp" in status.layers
            pool.stop(plugin.name)
    warnings = [r.getMessage() for r in caplog.records if "sandbox degraded" in r.getMessage()]
    assert warnings == [
        "worker sandbox degraded: sandbox layer 'landlock' is not available on this kernel; running without it"
    ]
