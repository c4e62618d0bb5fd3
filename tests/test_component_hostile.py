"""Hostile plugins are stopped with the same errors whichever ABI they use: a loop (CPU deadline), a memory bomb
(StoreLimits), a trap in a host import's path, results too large or outside memory, an export of another type.
Each runs in the real locked-down worker; after each one the same worker answers the next call from a fresh
Store (docs/components.md, "Containment")."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin
from supervisor.worker_process import WorkerLimits
from supervisor.workers import WorkerPool
from wasm_fixtures import RecordingHost, guest_wat, make_guest
from component_fixtures import component_of

MIB = 1024 * 1024
CAP_CHAT = 65536
ABIS = ["core", "component"]

# The chat export misbehaves as its model argument's first letter says:
#   l  loops forever            g  grows memory until refused, then traps     h  returns 1 MiB of text
#   o  returns a string outside memory (components; a length past the buffer for core)
#   s  stores "k"="v"           r  reads "k" with a cabi_realloc that traps (components only)
#   anything else: the text "fine"
CORE_HOSTILE = guest_wat("""
  (data (i32.const 1024) "{\\"text\\":\\"fine\\"}")  ;; 15
  (func (export "provider_chat") (param $m i32) (param $ml i32) (param $model i32) (param $model_len i32)
                                 (param $ret i32) (result i32)
    (local $c i32)
    (local.set $c (i32.load8_u (local.get $model)))
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $c) (i32.const 103))
      (then (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))
    (if (i32.eq (local.get $c) (i32.const 104)) (then (return (i32.const 1048576))))
    (if (i32.eq (local.get $c) (i32.const 111)) (then (return (i32.const 0x7fffffff))))
    (memory.copy (local.get $ret) (i32.const 1024) (i32.const 15))
    (i32.const 15))
""")

COMPONENT_HOSTILE = """
(module
  (import "tark:plugin/storage@0.1.0" "get" (func $storage_get (param i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "fine")
  (data (i32.const 1040) "kv")
  (global $heap (mut i32) (i32.const 65536))
  (global $realloc_traps (mut i32) (i32.const 0))
  (func (export "cabi_realloc") (param i32 i32 i32) (param $size i32) (result i32)
    (local $p i32)
    (if (global.get $realloc_traps) (then unreachable))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then (drop (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
                                                    (i32.const 16)) (i32.const 1))))))
    (local.get $p))
  (func (export "tark:plugin/provider-plugin@0.1.0#name") (result i32)
    (i32.store (i32.const 2048) (i32.const 1024))
    (i32.store (i32.const 2052) (i32.const 4))
    (i32.const 2048))
  (func (export "tark:plugin/provider-plugin@0.1.0#models") (result i32)
    (i32.store (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (i32.const 0))
    (i32.const 2048))
  (func (export "tark:plugin/provider-plugin@0.1.0#chat") (param i32 i32) (param $model i32) (param i32) (result i32)
    (local $c i32) (local $len i32)
    (local.set $c (i32.load8_u (local.get $model)))
    (local.set $len (i32.const 4))
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $c) (i32.const 103))
      (then (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))
    (if (i32.eq (local.get $c) (i32.const 104))
      (then (drop (memory.grow (i32.const 16)))
            (memory.fill (i32.const 4096) (i32.const 97) (i32.const 1048576))
            (i32.store (i32.const 1024) (i32.const 4096))  ;; content at 4096: 1 MiB of "a"
            (local.set $len (i32.const 1048576))))
    (if (i32.eq (local.get $c) (i32.const 111)) (then (local.set $len (i32.const 0x7fffffff))))
    (if (i32.eq (local.get $c) (i32.const 115))
      (then (call $storage_set (i32.const 1040) (i32.const 1) (i32.const 1041) (i32.const 1) (i32.const 2080))))
    (if (i32.eq (local.get $c) (i32.const 114))
      (then (global.set $realloc_traps (i32.const 1))
            (call $storage_get (i32.const 1040) (i32.const 1) (i32.const 2080))))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (select (i32.load (i32.const 1024)) (i32.const 1024) (i32.eq (local.get $c) (i32.const 104))))
    (i32.store (i32.const 2056) (local.get $len))
    (i32.store (i32.const 2060) (i32.const 1024))
    (i32.store (i32.const 2064) (i32.const 0))
    (i32.store (i32.const 2068) (i32.const 1))
    (i32.const 2048))
)
"""


@pytest.fixture(scope="module")
def component_wasm() -> bytes:
    return component_of(COMPONENT_HOSTILE, "provider-world")


@pytest.fixture
def pool(tmp_path: Path):
    runtime = Path(tempfile.mkdtemp(prefix="th-"))
    limits = WorkerLimits(memory_limit_bytes=64 * MIB, call_cpu_ms=300)
    try:
        with WorkerPool(runtime, ModuleCache(tmp_path / "cache"),
                        lambda plugin: RecordingHost(plugin, home=str(tmp_path)),
                        limits=lambda plugin: limits) as pool:
            yield pool
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(params=ABIS)
def hostile(request, tmp_path: Path, component_wasm: bytes) -> InstalledPlugin:
    if request.param == "core":
        return make_guest(tmp_path / "hostile", wat=CORE_HOSTILE, name="hostile", capabilities="storage = true")
    return make_guest(tmp_path / "hostile", wasm=component_wasm, name="hostile", capabilities="storage = true")


def chat(pool: WorkerPool, plugin: InstalledPlugin, model: str):
    return pool.call(plugin, "provider_chat", [b'[{"role":"user","content":"hi"}]', model.encode()], CAP_CHAT)


def assert_still_serving(pool: WorkerPool, plugin: InstalledPlugin, pid: int | None) -> None:
    outcome = chat(pool, plugin, "x")
    assert outcome.ok, outcome.error_message
    assert json.loads(outcome.output)["text"] == "fine"
    assert pid is None or outcome.worker_pid == pid  # the same worker, a fresh Store


def first_pid(pool: WorkerPool, plugin: InstalledPlugin) -> int:
    outcome = chat(pool, plugin, "x")
    assert outcome.ok, outcome.error_message
    return outcome.worker_pid


def test_an_endless_loop_is_stopped_at_the_cpu_deadline(pool, hostile) -> None:
    pid = first_pid(pool, hostile)
    outcome = chat(pool, hostile, "loop")
    assert outcome.error_kind == "cpu_limit"
    assert "exceeded its CPU budget of 300 ms" in outcome.error_message
    assert_still_serving(pool, hostile, pid)


def test_a_memory_bomb_stops_at_the_memory_cap(pool, hostile) -> None:
    pid = first_pid(pool, hostile)
    outcome = chat(pool, hostile, "grow")
    assert outcome.error_kind == "trap"
    assert "unreachable" in outcome.error_message
    assert_still_serving(pool, hostile, pid)


def test_a_result_larger_than_the_buffer_is_refused(pool, hostile) -> None:
    pid = first_pid(pool, hostile)
    outcome = chat(pool, hostile, "huge")
    assert outcome.error_kind == "bad_result"
    assert "'provider_chat' returned a result of" in outcome.error_message
    assert "larger than the 65536-byte buffer" in outcome.error_message
    assert_still_serving(pool, hostile, pid)


def test_a_result_outside_guest_memory_fails_the_call_only(pool, hostile) -> None:
    pid = first_pid(pool, hostile)
    outcome = chat(pool, hostile, "oob")
    assert outcome.error_kind in ("bad_result", "trap")
    assert outcome.error_message
    assert_still_serving(pool, hostile, pid)


@pytest.mark.parametrize("hostile", ["component"], indirect=True)
def test_a_trap_inside_a_host_import_discards_the_store(pool, hostile) -> None:
    pid = first_pid(pool, hostile)
    assert chat(pool, hostile, "store").ok
    # storage.get answers Some("v"): lowering it calls the guest's cabi_realloc, which traps mid-import
    outcome = chat(pool, hostile, "read")
    assert outcome.error_kind == "trap"
    assert "unreachable" in outcome.error_message
    assert_still_serving(pool, hostile, pid)


def test_an_export_of_another_type_is_a_bad_result_not_a_crash(pool, tmp_path: Path) -> None:
    wit = tmp_path / "other.wit"
    wit.write_text("package tark:plugin@0.1.0;\n"
                   "interface provider-plugin { name: func() -> u32; }\n"
                   "world w { export provider-plugin; }\n")
    core = """(module (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 64))
      (func (export "tark:plugin/provider-plugin@0.1.0#name") (result i32) (i32.const 7)))"""
    from component_fixtures import BUILD
    import wasmtime
    wasm = BUILD.component_from_core(bytes(wasmtime.wat2wasm(core)), "w", wit)
    plugin = make_guest(tmp_path / "odd", wasm=wasm, name="odd")
    outcome = pool.call(plugin, "provider_info", [], 8192)
    assert outcome.error_kind == "bad_result"
    assert "name() is a int; expected a string" in outcome.error_message


@pytest.mark.parametrize("hostile", ["component"], indirect=True)
def test_a_component_runs_in_the_same_locked_down_worker(pool, hostile) -> None:
    first_pid(pool, hostile)
    [status] = [s for s in pool.status() if s.name == "hostile"]
    assert {"seccomp", "landlock", "nnp", "rlimits", "netns", "uid"} <= set(status.layers), status.layers


def test_a_long_lived_instance_that_traps_is_replaced_by_a_fresh_one(pool, hostile) -> None:
    def named(model: str):
        return pool.call(hostile, "provider_chat", [b"[]", model.encode()], CAP_CHAT, instance="poll")

    assert named("x").ok
    assert named("grow").error_kind == "trap"
    again = named("x")  # the poisoned Store was dropped with its instance; this one is new
    assert again.ok, again.error_message
    assert json.loads(again.output)["text"] == "fine"


def test_a_component_importing_what_the_host_does_not_offer_never_starts(pool, tmp_path: Path) -> None:
    wit = tmp_path / "shell.wit"
    wit.write_text("package tark:plugin@0.1.0;\n"
                   "interface shell { run: func(cmd: string) -> string; }\n"
                   "interface provider-plugin { name: func() -> string; }\n"
                   "world w { import shell; export provider-plugin; }\n")
    core = """(module (import "tark:plugin/shell@0.1.0" "run" (func (param i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 64))
      (func (export "tark:plugin/provider-plugin@0.1.0#name") (result i32) (i32.const 16)))"""
    from component_fixtures import BUILD
    import wasmtime
    plugin = make_guest(tmp_path / "shell", name="shell",
                        wasm=BUILD.component_from_core(bytes(wasmtime.wat2wasm(core)), "w", wit))
    outcome = pool.call(plugin, "provider_info", [], 8192)
    assert outcome.error_kind in ("instantiate", "start_failed")
    assert "tark:plugin/shell@0.1.0" in outcome.error_message


def test_wasi_p2_gives_a_component_no_environment_and_no_arguments(pool, tmp_path: Path) -> None:
    wit = tmp_path / "wasi.wit"
    wit.write_text("package tark:plugin@0.1.0;\n"
                   "interface provider-plugin { name: func() -> string; }\n"
                   "world w { import wasi:cli/environment@0.2.0; export provider-plugin; }\n"
                   "package wasi:cli@0.2.0 { interface environment {\n"
                   "  get-environment: func() -> list<tuple<string, string>>;\n"
                   "  get-arguments: func() -> list<string>;\n} }\n")
    # name(): "clean" if the environment and the arguments are both empty, else "leak"
    core = """(module
      (import "wasi:cli/environment@0.2.0" "get-environment" (func $env (param i32)))
      (import "wasi:cli/environment@0.2.0" "get-arguments" (func $args (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "clean")
      (data (i32.const 32) "leak")
      (global $heap (mut i32) (i32.const 4096))
      (func (export "cabi_realloc") (param i32 i32 i32) (param $n i32) (result i32)
        (global.get $heap)
        (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $n)) (i32.const 7)) (i32.const -8))))
      (func (export "tark:plugin/provider-plugin@0.1.0#name") (result i32)
        (call $env (i32.const 256))
        (call $args (i32.const 264))
        (i32.store (i32.const 512) (i32.const 32))
        (i32.store (i32.const 516) (i32.const 4))
        (if (i32.eqz (i32.or (i32.load (i32.const 260)) (i32.load (i32.const 268))))
          (then (i32.store (i32.const 512) (i32.const 16)) (i32.store (i32.const 516) (i32.const 5))))
        (i32.const 512)))"""
    from component_fixtures import BUILD
    import wasmtime
    plugin = make_guest(tmp_path / "wasi", name="wasi",
                        wasm=BUILD.component_from_core(bytes(wasmtime.wat2wasm(core)), "w", wit))
    outcome = pool.call(plugin, "provider_info", [], 8192)
    assert outcome.ok, outcome.error_message
    assert json.loads(outcome.output)["id"] == "clean"
