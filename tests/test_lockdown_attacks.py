"""A compromised worker owns nothing: from inside a real, locked-down worker (tests/lockdown_entries.py runs the
production lockdown, then attacks instead of running the guest), every attempt on the supervisor, a sibling plugin,
the files of other plugins, the network and the kernel fails, and the supervisor and the sibling keep working.
docs/security.md lists the layers; each attempt below names what it tries."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from lockdown_entries import run_attacker, run_attacker_without_landlock_or_userns, run_attacker_without_seccomp
from supervisor.host import PluginHost
from supervisor.modules import ModuleCache
from supervisor.workers import WorkerPool
from wasm_fixtures import make_guest

ATTEMPTS = 16


@pytest.fixture
def world(tmp_path: Path, runtime_dir: Path):
    """A sibling plugin with storage and a credentials file, a TCP server on 127.0.0.1, a unix socket of the
    supervisor's, and the attacker's plugin."""
    sibling = make_guest(tmp_path / "sibling", '(func (export "status") (result i32) (i32.const 7))', name="sibling")
    (sibling.data_dir).mkdir(exist_ok=True)
    storage = sibling.data_dir / "storage.sqlite3"
    storage.write_bytes(b"SQLite format 3\0")
    storage.chmod(0o600)
    credentials = tmp_path / "sibling_oauth.json"
    credentials.write_text('{"access_token": "sibling-secret"}')
    credentials.chmod(0o600)
    attacker = make_guest(tmp_path / "attacker", '(func (export "status") (result i32) (i32.const 1))',
                          name="attacker")
    server = socket.create_server(("127.0.0.1", 0))
    supervisor_socket = socket.socket(socket.AF_UNIX)
    supervisor_socket.bind(str(runtime_dir / "control.sock"))
    os.chmod(runtime_dir / "control.sock", 0o600)
    supervisor_socket.listen()
    yield dict(sibling=sibling, attacker=attacker, storage=storage, credentials=credentials, server=server,
               supervisor_socket=runtime_dir / "control.sock", cache=tmp_path / "cache")
    server.close()
    supervisor_socket.close()


def _attack_from_inside(world, runtime_dir: Path, entry) -> tuple[dict[str, str], WorkerPool, int, list[str]]:
    sibling_pool = WorkerPool(runtime_dir, ModuleCache(world["cache"]), lambda p: PluginHost(p))
    attacker_pool = WorkerPool(runtime_dir, ModuleCache(world["cache"]), lambda p: PluginHost(p), worker_entry=entry)
    sibling_first = sibling_pool.call(world["sibling"], "status", [], None)
    assert sibling_first.ret == 7
    targets = {
        "supervisor_pid": os.getpid(),
        "sibling_pid": sibling_first.worker_pid,
        "sibling_storage": str(world["storage"]),
        "sibling_credentials": str(world["credentials"]),
        "sibling_wasm": str(world["sibling"].wasm_path),
        "module_cache": str(world["cache"]),
        "tcp_port": world["server"].getsockname()[1],
        "supervisor_socket": str(world["supervisor_socket"]),
    }
    outcome = attacker_pool.call(world["attacker"], "attack", [json.dumps(targets).encode()], 65536)
    assert outcome.ok, outcome.error_message
    (status,) = attacker_pool.status()
    attacker_pool.close()
    return json.loads(outcome.output), sibling_pool, sibling_first.worker_pid, list(status.layers)


def _assert_all_blocked(results: dict[str, str]) -> None:
    assert len(results) == ATTEMPTS
    succeeded = {what: how for what, how in results.items() if not how.startswith("blocked")}
    assert succeeded == {}


def _assert_sibling_unharmed(world, sibling_pool: WorkerPool, sibling_pid: int) -> None:
    again = sibling_pool.call(world["sibling"], "status", [], None)
    assert (again.ret, again.worker_pid) == (7, sibling_pid)
    assert world["credentials"].read_text() == '{"access_token": "sibling-secret"}'
    assert list(world["cache"].glob("evil")) == []
    sibling_pool.close()


def test_every_attempt_from_a_locked_down_worker_fails(world, runtime_dir: Path) -> None:
    results, sibling_pool, sibling_pid, layers = _attack_from_inside(world, runtime_dir, run_attacker)
    assert {"nnp", "rlimits", "netns", "landlock", "nodump", "seccomp"} <= set(layers)
    if os.geteuid() == 0:
        assert "uid" in layers
    else:
        assert "userns" in layers
    _assert_all_blocked(results)
    _assert_sibling_unharmed(world, sibling_pool, sibling_pid)


def test_the_bytes_written_to_the_wasm_are_unchanged(world, runtime_dir: Path) -> None:
    before = world["sibling"].wasm_path.read_bytes()
    _results, sibling_pool, _pid, _layers = _attack_from_inside(world, runtime_dir, run_attacker)
    assert world["sibling"].wasm_path.read_bytes() == before
    sibling_pool.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="without landlock and namespaces, only an own uid keeps files apart")
def test_without_landlock_or_namespaces_the_worker_says_so_and_the_rest_still_holds(world, runtime_dir: Path,
                                                                                      caplog) -> None:
    # A kernel without landlock or user namespaces: the worker runs, reports the layers it lacks, and its own uid
    # and the seccomp filter still stop every attempt.
    with caplog.at_level("WARNING", logger="supervisor.workers"):
        results, sibling_pool, sibling_pid, layers = _attack_from_inside(
            world, runtime_dir, run_attacker_without_landlock_or_userns)
    assert "landlock" not in layers and "netns" not in layers and {"uid", "seccomp"} <= set(layers)
    degraded = [r.getMessage() for r in caplog.records if "sandbox degraded" in r.getMessage()]
    assert any("'landlock' is not available" in message for message in degraded)
    assert any("'netns' is not available" in message for message in degraded)
    _assert_all_blocked(results)
    _assert_sibling_unharmed(world, sibling_pool, sibling_pid)


def test_without_seccomp_the_other_layers_still_stop_every_attempt_but_fork(world, runtime_dir: Path) -> None:
    # Each layer on its own, not only the first one an attempt meets: with the seccomp filter gone, landlock
    # (files, /proc, TCP), its scopes and the uid (signals, ptrace), the empty netns and the dropped capabilities
    # still block everything. Only fork gets through (seccomp alone stops it); the child is as locked down.
    results, sibling_pool, sibling_pid, layers = _attack_from_inside(world, runtime_dir, run_attacker_without_seccomp)
    assert "seccomp" not in layers and {"landlock", "netns"} <= set(layers)
    assert results.pop("fork") == "SUCCEEDED"
    assert {what: how for what, how in results.items() if not how.startswith("blocked")} == {}
    assert results["read another plugin's storage"] == "blocked: Permission denied"  # landlock: EACCES, not EPERM
    _assert_sibling_unharmed(world, sibling_pool, sibling_pid)


def test_a_plugin_whose_required_layer_is_missing_does_not_run(world, runtime_dir: Path) -> None:
    pool = WorkerPool(runtime_dir, ModuleCache(world["cache"]), lambda p: PluginHost(p),
                      worker_entry=run_attacker_without_landlock_or_userns,
                      required_layers=lambda plugin: ("landlock", "seccomp"))
    try:
        outcome = pool.call(world["attacker"], "attack", [b"{}"], 65536)
        assert outcome.error_kind == "start_failed"
        assert "may only run with the sandbox layers landlock" in outcome.error_message
        assert "not available on this kernel" in outcome.error_message
    finally:
        pool.close()


def test_the_supervisor_is_not_dumpable(tmp_path: Path) -> None:
    # Same-uid processes must not read the supervisor's memory or environment, nor ptrace it.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import ctypes
        from pathlib import Path
        from supervisor.registry import Registry
        from supervisor.supervisor import Supervisor
        tmp = Path({str(tmp_path)!r})
        (tmp / "run").mkdir(mode=0o700)
        before = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)
        Supervisor(Registry(tmp / "plugins"), runtime_dir=tmp / "run", cache_dir=tmp / "cache")
        print(before, ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
    """)
    env = dict(os.environ, TARK_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0"]
