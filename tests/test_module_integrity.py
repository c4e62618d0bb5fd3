"""What a worker runs is the module the supervisor compiled: a cache entry swapped on disk is detected, reported and
never executed, and the bytes a worker loads cannot change between the supervisor's check and the load. Written
from the attacker's side: a same-uid process that replaces a serialized module in the cache with its own."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
import wasmtime

from supervisor.modules import DIGESTS_DIR, ModuleCache
from test_worker_identity import Events
from test_worker_lifecycle import BODY
from wasm_fixtures import WASI_PROC_EXIT, guest_wat, make_guest
from worker import protocol

# The attacker's module: the same exports, but `status` answers 666 (code that is not the plugin's).
EVIL_BODY = BODY.replace('(func (export "status") (result i32) (i32.const 7))',
                         '(func (export "status") (result i32) (i32.const 666))')


@pytest.fixture
def plugin(tmp_path: Path):
    return make_guest(tmp_path / "probe", BODY, extra_imports=WASI_PROC_EXIT)


def evil_artifact() -> bytes:
    """A valid serialized module for the supervisor's engine settings, compiled by the attacker."""
    engine = wasmtime.Engine(protocol.build_engine_config(protocol.EngineSettings()))
    assert EVIL_BODY != BODY
    return bytes(wasmtime.Module(engine, wasmtime.wat2wasm(guest_wat(EVIL_BODY, extra_imports=WASI_PROC_EXIT))).serialize())


def pool_over(make_pool_kwargs, tmp_path: Path, runtime_dir: Path, events: Events):
    from supervisor.host import PluginHost
    from supervisor.workers import WorkerPool

    cache = ModuleCache(tmp_path / "cache", security_events=events)
    return cache, WorkerPool(runtime_dir, cache, lambda p: PluginHost(p), security_events=events, **make_pool_kwargs)


@pytest.mark.parametrize("digest", ["kept", "removed"])
def test_a_swapped_cache_entry_is_detected_recompiled_and_never_run(tmp_path, runtime_dir, plugin, digest):
    events = Events()
    cache, pool = pool_over({}, tmp_path, runtime_dir, events)
    with pool:
        assert pool.call(plugin, "status", [], None).ret == 7
    cache.close()
    artifact = ModuleCache(tmp_path / "cache").artifact_for(plugin.wasm_path)
    artifact.write_bytes(evil_artifact())  # the attack, between two runs of the supervisor
    if digest == "removed":
        (tmp_path / "cache" / DIGESTS_DIR / f"{artifact.name}.sha256").unlink()

    restarted, pool = pool_over({}, tmp_path, runtime_dir, events)  # a new supervisor: nothing in memory
    with pool:
        outcome = pool.call(plugin, "status", [], None)
    restarted.close()
    assert (outcome.ret, outcome.error_kind) == (7, None)
    [report] = events.of("module_cache_tampered")
    assert report["entry"] == str(artifact) and report["sha256"] == hashlib.sha256(evil_artifact()).hexdigest()
    assert report["expected"] == ("(no digest recorded)" if digest == "removed" else report["expected"])
    good = artifact.read_bytes()  # compiled again from the plugin's wasm and recorded
    assert good != evil_artifact()
    recorded = (tmp_path / "cache" / DIGESTS_DIR / f"{artifact.name}.sha256").read_text().strip()
    assert recorded == hashlib.sha256(good).hexdigest()


def test_a_cache_entry_swapped_while_the_supervisor_runs_is_never_loaded(tmp_path, runtime_dir, plugin):
    events = Events()
    cache, pool = pool_over({}, tmp_path, runtime_dir, events)
    with pool:
        first = pool.call(plugin, "status", [], None)
        artifact = cache.artifact_for(plugin.wasm_path)
        artifact.write_bytes(evil_artifact())
        pool.stop("probe")
        again = pool.call(plugin, "status", [], None)  # a new worker, handed the module verified before the swap
        assert (again.ret, again.error_kind) == (7, None) and again.worker_pid != first.worker_pid
        with open(f"/proc/{again.worker_pid}/maps") as maps:
            assert "/memfd:tark-module-probe" in maps.read()  # it runs from the supervisor's memfd, not the file
        proc = Path(f"/proc/{again.worker_pid}")
        held = [fd for fd in os.listdir(proc / "fd") if os.readlink(proc / "fd" / fd).startswith("/memfd:tark-module")]
        for fd in held:  # wasmtime keeps the file it mapped open, read-only (and the memfd is sealed anyway)
            flags = int((proc / "fdinfo" / fd).read_text().split("flags:")[1].split()[0], 8)
            assert flags & os.O_ACCMODE == os.O_RDONLY
    cache.close()


def test_the_module_a_worker_is_handed_cannot_be_changed(tmp_path, plugin):
    cache = ModuleCache(tmp_path / "cache")
    module = cache.load(plugin.wasm_path)
    def write_through_a_new_descriptor() -> None:
        fd = os.open(f"/proc/self/fd/{module.fd}", os.O_WRONLY)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)

    for attempt in (lambda: os.pwrite(module.fd, b"\0", 0), lambda: os.ftruncate(module.fd, 0),
                    lambda: os.ftruncate(module.fd, 1 << 30), write_through_a_new_descriptor):
        with pytest.raises(PermissionError) as refused:
            attempt()
        assert refused.value.errno == errno.EPERM
    with open(f"/proc/self/fd/{module.fd}", "rb") as reopened:
        assert hashlib.sha256(reopened.read()).hexdigest() == module.digest
    cache.close()


ECHO = r"""
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (local.get $p) (local.get $l)) (local.get $l))
"""
EVIL_ECHO = r"""
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (i32.store8 (local.get $ret) (i32.const 54)) (i32.const 1))
"""


def test_through_the_cli_a_swapped_entry_is_audited_and_the_plugin_still_runs_its_own_code(tmp_path, cli):
    import json

    from supervisor import paths
    from supervisor.capabilities.audit import default_audit_path, read_audit_trail

    make_guest(tmp_path / "src", ECHO, name="echoer")
    assert cli("plugin", "add", "--yes", str(tmp_path / "src")).exit_code == 0
    first = cli("plugin", "call", "echoer", "echo", "hi", "--json")
    assert json.loads(first.stdout)["output"] == "hi", first.output
    [artifact] = (paths.cache_dir() / "modules").glob("*.cwasm")
    engine = wasmtime.Engine(protocol.build_engine_config(protocol.EngineSettings()))
    artifact.write_bytes(bytes(wasmtime.Module(engine, wasmtime.wat2wasm(guest_wat(EVIL_ECHO))).serialize()))
    again = cli("plugin", "call", "echoer", "echo", "hi", "--json")
    assert json.loads(again.stdout)["output"] == "hi", again.output  # not the attacker's "6"
    tampered = [r for r in read_audit_trail(default_audit_path()) if r["kind"] == "module_cache_tampered"]
    assert [(r["plugin"], r["entry"]) for r in tampered] == [("echoer", str(artifact))]


def test_a_wasm_that_is_not_the_pinned_one_is_never_compiled(tmp_path, plugin):
    from supervisor.modules import ModuleCompileError

    cache = ModuleCache(tmp_path / "cache")
    approved = hashlib.sha256(plugin.wasm_path.read_bytes()).hexdigest()
    assert cache.load(plugin.wasm_path, "probe", expected_sha256=approved).digest
    plugin.wasm_path.write_bytes(wasmtime.wat2wasm(guest_wat(EVIL_BODY, extra_imports=WASI_PROC_EXIT)))
    with pytest.raises(ModuleCompileError, match=f"probe: plugin.wasm is not the approved module .*approved {approved}"):
        cache.load(plugin.wasm_path, "probe", expected_sha256=approved)
    assert len(list((tmp_path / "cache" / "modules").glob("*.cwasm"))) == 1  # the swapped one was not compiled
    cache.close()
