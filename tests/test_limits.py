"""Limits that end things fast, from one source of truth (docs/limits.md).

Attacker's side: a guest growing its memory one page at a time (what allocators do) and a memory bomb, an
oversized argument, a websocket server flooding the supervisor with 1 MiB messages. Plus the pure resolver
(defaults <- admin policy <- the admin policy's entry for one plugin) that every derived value comes from.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path

import pytest

from cap_support import make_host
from policy.limits import (ADMIN, ADMIN_PLUGIN, DEFAULT, MIB, Limits, LimitsError, resolve_limits,
                           worker_address_space_bytes)
from supervisor.supervisor import CallRefused, Supervisor
from supervisor.workers import WorkerLimits
from wasm_fixtures import make_guest
from worker import protocol

BODY = r"""
  ;; grow one page at a time until refused; returns the final size in pages
  (func (export "grow_all") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (memory.size))
  ;; the same, then trap as a Rust allocator does when allocation fails
  (func (export "bomb") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)
  (func (export "noop") (result i32) (i32.const 0))
  (func (export "echo") (param $p i32) (param $l i32) (param $ret i32) (result i32) (i32.const 0))
"""


@pytest.fixture
def guest(tmp_path: Path):
    return make_guest(tmp_path / "grower", BODY, name="grower")


def test_growing_page_by_page_to_the_cap_takes_milliseconds(make_pool, guest) -> None:
    pool = make_pool(limits=lambda plugin: WorkerLimits(memory_limit_bytes=256 * MIB))
    assert pool.call(guest, "noop", [], None).ok  # the worker is warm
    outcome = pool.call(guest, "grow_all", [], None, timeout_s=30)
    assert outcome.ok, outcome.error_message
    assert outcome.ret == 256 * MIB // 65536  # it reached the cap ...
    assert outcome.duration_s < 1.0  # ... without copying memory on every grow (quadratic: minutes)


def test_a_memory_bomb_stops_at_the_cap_with_an_error_naming_it(make_pool, guest) -> None:
    pool = make_pool(limits=lambda plugin: WorkerLimits(memory_limit_bytes=64 * MIB))
    assert pool.call(guest, "noop", [], None).ok
    outcome = pool.call(guest, "bomb", [], None, timeout_s=30)
    assert outcome.error_kind == "trap"
    assert "64 MiB cap" in outcome.error_message and "memory_limit_bytes" in outcome.error_message
    assert outcome.duration_s < 1.0
    assert pool.call(guest, "noop", [], None).ok  # and the plugin keeps working


def test_an_oversized_argument_is_refused_before_any_worker_sees_it(cli, guest) -> None:
    assert cli("plugin", "add", "--yes", str(guest.directory)).exit_code == 0
    with Supervisor() as supervisor:
        started = time.monotonic()
        with pytest.raises(CallRefused) as refused:
            supervisor.call("grower", "echo", ["x" * (6 * 1024 * 1024)])
        assert time.monotonic() - started < 1
        assert "argument 1 of 'echo' is 6.0 MiB (6291456 bytes)" in str(refused.value)
        assert "4.0 MiB (4194304 bytes) limit" in str(refused.value) and "call_max_arg_bytes" in str(refused.value)
        assert supervisor.status() == []  # no worker was started for it


def test_an_admin_limit_on_argument_size_applies_to_that_plugin(cli, guest) -> None:
    assert cli("plugin", "add", "--yes", str(guest.directory)).exit_code == 0
    resolved = resolve_limits(per_plugin={"call_max_arg_bytes": 1000})
    with Supervisor(resolve_limits=lambda name: resolved) as supervisor:
        with pytest.raises(CallRefused, match="1001 bytes, over the 1000 bytes limit"):
            supervisor.call("grower", "echo", ["y" * 1001])
        assert supervisor.call("grower", "echo", ["y" * 1000]).ok


def test_a_16_mb_argument_through_the_daemon_is_refused_by_the_client(cli, guest, run_tark) -> None:
    from supervisor.control import DaemonClient
    import os

    assert cli("plugin", "add", "--yes", str(guest.directory)).exit_code == 0
    assert run_tark("supervisor", "start").returncode == 0
    try:
        with DaemonClient(Path(os.environ["TARK_RUNTIME_DIR"])) as client:
            with pytest.raises(CallRefused, match="control socket's 16777216-byte limit"):
                client.call("grower", "echo", ["z" * (16 * 1024 * 1024)])
            with pytest.raises(CallRefused, match="call_max_arg_bytes"):  # the daemon checks the plugin's limit
                client.call("grower", "echo", ["z" * (6 * 1024 * 1024)])
            assert client.call("grower", "echo", ["fine"]).ok
    finally:
        run_tark("supervisor", "stop")


def test_a_flooding_websocket_server_is_throttled_not_buffered(tmp_path: Path) -> None:
    from websockets.sync.server import serve

    sent = []
    stop = threading.Event()
    message = base64.b64encode(os.urandom(MIB * 3 // 4)).decode()  # 1 MiB that deflate cannot shrink

    def handler(ws) -> None:
        count = 0
        while not stop.is_set():
            try:
                ws.send(message)
            except Exception:
                return
            count += 1
            sent.append(count)

    with serve(handler, "127.0.0.1", 0) as server:
        port = server.socket.getsockname()[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with make_host(tmp_path, f'http = ["ws://127.0.0.1:{port}"]') as host:
            reply = host.handle(protocol.WsConnect(host_call_id=1, url=f"ws://127.0.0.1:{port}/", headers=""))
            assert b'"ok":true' in reply.data
            time.sleep(2)
            first = len(sent)
            time.sleep(1)
            second = len(sent)
            stop.set()
        server.shutdown()
    # The client keeps ws_max_queued_messages (2) and the kernel's socket buffers hold a few more: the server
    # is blocked, not the supervisor's memory growing by 1 MiB per message.
    assert second == first, "the server could keep sending: the client buffers without bound"
    assert first <= Limits().ws_max_queued_messages + 14


# ---------------------------------------------------------------------------- the resolver (pure)


def test_each_value_comes_from_the_last_layer_that_sets_it() -> None:
    resolved = resolve_limits(admin={"call_timeout_s": 10, "memory_limit_bytes": 128 * MIB},
                              per_plugin={"call_timeout_s": 5})
    assert resolved.limits.call_timeout_s == 5 and resolved.sources["call_timeout_s"] == ADMIN_PLUGIN
    assert resolved.limits.memory_limit_bytes == 128 * MIB and resolved.sources["memory_limit_bytes"] == ADMIN
    assert resolved.limits.ws_max_handles == 8 and resolved.sources["ws_max_handles"] == DEFAULT
    assert resolved.describe()["call_timeout_s"][:2] == (5, ADMIN_PLUGIN)


@pytest.mark.parametrize("admin, per_plugin, message", [
    ({"call_timeout": 5}, {}, "unknown limit 'call_timeout' in the admin policy"),
    ({}, {"ws_max_handles": 2.5}, "'ws_max_handles' in the admin policy, per plugin must be a whole number"),
    ({"call_timeout_s": "5"}, {}, "must be a number, got '5'"),
    ({"call_timeout_s": True}, {}, "must be a number"),
    ({}, {"memory_limit_bytes": 0}, "memory_limit_bytes must be positive, got 0 (set in the admin policy, per plugin)"),
])
def test_a_bad_admin_limit_is_refused_naming_it(admin, per_plugin, message) -> None:
    with pytest.raises(LimitsError) as error:
        resolve_limits(admin=admin, per_plugin=per_plugin)
    assert message in str(error.value)


def test_the_worker_and_engine_derive_from_the_resolved_limits(tmp_path: Path) -> None:
    from supervisor.modules import ModuleCache

    limits = resolve_limits(per_plugin={"memory_limit_bytes": 64 * MIB, "call_cpu_ms": 500}).limits
    worker = WorkerLimits.derive(limits)
    assert (worker.memory_limit_bytes, worker.call_cpu_ms) == (64 * MIB, 500)
    assert worker.os_memory_limit_bytes == worker_address_space_bytes(limits, 65536) > 4 * 64 * MIB
    settings = ModuleCache(tmp_path / "cache").settings_for(limits.memory_limit_bytes)
    assert settings.memory_reservation == 64 * MIB  # reservation = cap: growth never copies memory


def test_plugin_info_shows_each_limit_and_where_it_came_from(cli, guest, run_tark) -> None:
    import json

    assert cli("plugin", "add", "--yes", str(guest.directory)).exit_code == 0
    shown = run_tark("plugin", "info", "grower")
    assert shown.returncode == 0, shown.stderr
    assert "call_timeout_s:" in shown.stdout and "120 s" in shown.stdout
    assert "call_max_arg_bytes:" in shown.stdout and "4 MiB" in shown.stdout and "(default)" in shown.stdout
    doc = json.loads(run_tark("plugin", "info", "grower", "--json").stdout)
    assert doc["limits"]["memory_limit_bytes"] == {
        "value": 256 * MIB, "source": DEFAULT, "meaning": Limits.__attrs_attrs__.memory_limit_bytes.metadata["doc"]}
