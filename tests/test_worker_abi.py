"""The 15 tark:* imports, end to end: guest -> worker process -> ZeroMQ -> supervisor PluginHost -> back.

Every guest here runs in a real worker process (real wasmtime, real sockets) and every host request is answered
by the real PluginHost. Pointer and UTF-8 checks happen in the worker; bad input gives the ABI's codes, never a
crash, and the worker keeps serving.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin
from supervisor.workers import WorkerPool
from wasm_fixtures import RecordingHost, make_guest
from worker import protocol

MEMORY_END = 2 * 65536  # the fixture guest has 2 pages and these probes never allocate

FORWARDING_EXPORTS = r"""
  (data (i32.const 100) "\ff\fe\fd")           ;; invalid UTF-8
  (data (i32.const 120) "k")                    ;; a storage key
  (data (i32.const 140) "fine")
  (func (export "storage_get") (param i32 i32 i32) (result i32)
    (call $storage_get (local.get 0) (local.get 1) (local.get 2)))
  (func (export "storage_set") (param i32 i32 i32 i32) (result i32)
    (call $storage_set (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "storage_delete") (param i32 i32) (result i32)
    (call $storage_delete (local.get 0) (local.get 1)))
  (func (export "env_get") (param i32 i32 i32) (result i32)
    (call $env_get (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fs_read") (param i32 i32 i32) (result i32)
    (call $fs_read (local.get 0) (local.get 1) (local.get 2)))
  (func (export "http_get") (param i32 i32 i32 i32 i32) (result i32)
    (call $http_get (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "http_post") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
    (call $http_post (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4) (local.get 5)
                     (local.get 6)))
  (func (export "ws_connect") (param i32 i32 i32 i32 i32) (result i32)
    (call $ws_connect (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "ws_send") (param i32 i32 i32) (result i32)
    (call $ws_send (i64.const 77) (local.get 0) (local.get 1) (local.get 2)))
  (func (export "ws_recv") (param i32) (result i32)
    (call $ws_recv (i64.const 77) (i64.const 10) (i64.const 100) (local.get 0)))
  (func (export "ws_close") (param i32) (result i32)
    (call $ws_close (i64.const 77) (local.get 0)))
  (func (export "log_all") (param i32 i32) (result i32)
    (call $log_debug (local.get 0) (local.get 1))
    (call $log_info (local.get 0) (local.get 1))
    (call $log_warn (local.get 0) (local.get 1))
    (call $log_error (local.get 0) (local.get 1))
    (i32.const 0))
  ;; fixed-pointer probes for the bounds checks (weakness 4)
  (func (export "get_at") (param $ptr i32) (param $len i32) (param $ret i32) (result i32)
    (call $storage_get (local.get $ptr) (local.get $len) (local.get $ret)))
  (func (export "probe_negative_ptr") (result i32) (call $storage_get (i32.const -1) (i32.const 3) (i32.const 4096)))
  (func (export "probe_negative_len") (result i32) (call $storage_get (i32.const 120) (i32.const -5) (i32.const 4096)))
  (func (export "probe_overflow") (result i32)
    (call $storage_get (i32.const 0x7fffffff) (i32.const 0x7fffffff) (i32.const 4096)))
  (func (export "probe_past_end") (result i32)
    (call $storage_get (i32.const 131070) (i32.const 10) (i32.const 4096)))
  (func (export "probe_ret_past_end") (result i32)       ;; key "k" holds a value; it cannot be written there
    (call $storage_get (i32.const 120) (i32.const 1) (i32.const 131070)))
  (func (export "probe_ret_negative") (result i32)
    (call $storage_get (i32.const 120) (i32.const 1) (i32.const -8)))
  (func (export "probe_empty_at_end") (result i32)       ;; missing key: empty result exactly at memory end is fine
    (call $storage_get (i32.const 140) (i32.const 4) (i32.const 131072)))
  (func (export "probe_empty_past_end") (result i32)
    (call $storage_get (i32.const 140) (i32.const 4) (i32.const 131073)))
  (func (export "probe_bad_utf8") (result i32) (call $storage_get (i32.const 100) (i32.const 3) (i32.const 4096)))
  (func (export "probe_fs_ret_past_end") (param i32 i32) (result i32)
    (call $fs_read (local.get 0) (local.get 1) (i32.const 131071)))
  (func (export "probe_log_bad_utf8") (result i32)
    (call $log_info (i32.const 100) (i32.const 3))
    (call $log_info (i32.const -1) (i32.const 3))
    (call $log_info (i32.const 140) (i32.const 4))
    (i32.const 0))
  (func (export "probe_env_set_then_get") (param i32 i32 i32) (result i32)
    (call $env_get (local.get 0) (local.get 1) (local.get 2)))
"""


@pytest.fixture
def local_http() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(b"got " + self.path.encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(b"posted " + body + b" as " + self.headers.get("X-Probe", "").encode())

        def _answer(self, body: bytes) -> None:
            self.send_response(201)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def setup(tmp_path: Path, local_http: str):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("hello from disk")
    plugin = make_guest(
        tmp_path / "probe",
        FORWARDING_EXPORTS,
        capabilities=(
            "storage = true\n"
            'env = ["ECHO_NAME"]\n'
            f'fs_read = ["{shared}"]\n'
            f'http = ["{local_http}"]\n'
        ),
    )
    hosts: list[RecordingHost] = []

    def host_factory(p: InstalledPlugin) -> RecordingHost:
        host = RecordingHost(p, environ={"ECHO_NAME": "from-host", "SECRET_TOKEN": "s3cret"}, home=str(tmp_path))
        hosts.append(host)
        return host

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    pool = WorkerPool(runtime, ModuleCache(tmp_path / "cache"), host_factory)
    yield pool, plugin, hosts, shared, local_http
    pool.close()


def test_the_guest_runs_in_a_separate_worker_process(setup) -> None:
    pool, plugin, *_ = setup
    outcome = pool.call(plugin, "storage_get", [b"absent"], 64)
    assert outcome.ok, outcome.error_message
    assert outcome.worker_pid not in (None, os.getpid())


def test_storage_set_get_delete_round_trip(setup) -> None:
    pool, plugin, *_ = setup
    assert pool.call(plugin, "storage_set", [b"token", b"abc\xc3\xa9"], None).ret == 0
    got = pool.call(plugin, "storage_get", [b"token"], 64)
    assert (got.ret, got.output) == (5, "abcé".encode())
    assert pool.call(plugin, "storage_delete", [b"token"], None).ret == 0
    missing = pool.call(plugin, "storage_get", [b"token"], 64)
    assert (missing.ret, missing.output) == (0, b"")  # tark: a missing key reads as 0 bytes


def test_env_get_returns_allowed_variables_only(setup) -> None:
    pool, plugin, *_ = setup
    allowed = pool.call(plugin, "env_get", [b"ECHO_NAME"], 256)
    assert (allowed.ret, allowed.output) == (9, b"from-host")
    denied = pool.call(plugin, "env_get", [b"SECRET_TOKEN"], 256)
    assert denied.ret == -2 and denied.output is None


def test_fs_read_reads_allowed_files_and_reports_write_failure_as_minus_4(setup) -> None:
    pool, plugin, _hosts, shared, _ = setup
    path = str(shared / "notes.txt").encode()
    read = pool.call(plugin, "fs_read", [path], 1024)
    assert (read.ret, read.output) == (15, b"hello from disk")
    assert pool.call(plugin, "fs_read", [b"/etc/passwd"], 1024).ret == -2
    assert pool.call(plugin, "probe_fs_ret_past_end", [path], None).ret == -4


def test_http_get_and_post_reach_an_allowed_server(setup) -> None:
    pool, plugin, _hosts, _shared, base = setup
    got = pool.call(plugin, "http_get", [f"{base}/x?y=1".encode(), b"[]"], 65536)
    assert got.ok, got.error_message
    response = json.loads(got.output)
    assert got.ret == len(got.output)
    assert response["status"] == 201 and response["body"] == "got /x?y=1"
    posted = pool.call(plugin, "http_post", [f"{base}/p".encode(), b"data", b'[["X-Probe","yes"]]'], 65536)
    assert json.loads(posted.output)["body"] == "posted data as yes"
    assert pool.call(plugin, "http_get", [b"https://example.com/", b"[]"], 65536).ret == -2


def test_ws_imports_pass_i64_handles(setup) -> None:
    pool, plugin, *_ = setup
    assert pool.call(plugin, "ws_connect", [b"wss://example.com/socket", b"[]"], 8192).ret == -2
    for export, args in (("ws_send", [b"hi"]), ("ws_recv", []), ("ws_close", [])):
        outcome = pool.call(plugin, export, args, 8192)
        assert outcome.ok and outcome.ret == len(outcome.output), (export, outcome)
        assert isinstance(json.loads(outcome.output), dict)
    unknown = json.loads(pool.call(plugin, "ws_send", [b"hi"], 8192).output)
    assert unknown == {"error": "Unknown websocket handle", "ok": False}


def test_log_levels_reach_the_host_as_one_way_messages(setup) -> None:
    pool, plugin, hosts, *_ = setup
    assert pool.call(plugin, "log_all", [b"plugin says hi"], None).ret == 0
    logs = [(m.level, m.message) for m in hosts[-1].logged if isinstance(m, protocol.Log)]
    assert logs == [(level, "plugin says hi") for level in ("debug", "info", "warn", "error")]


@pytest.mark.parametrize(
    "probe",
    ["probe_negative_ptr", "probe_negative_len", "probe_overflow", "probe_past_end", "probe_ret_past_end",
     "probe_ret_negative", "probe_empty_past_end", "probe_bad_utf8"],
)
def test_out_of_range_pointers_and_invalid_utf8_return_minus_1(setup, probe: str) -> None:
    pool, plugin, *_ = setup
    assert pool.call(plugin, "storage_set", [b"k", b"some value"], None).ret == 0
    first = pool.call(plugin, probe, [], None)
    assert (first.ret, first.error_kind) == (-1, None)
    after = pool.call(plugin, "storage_get", [b"k"], 64)  # same worker, still serving
    assert after.output == b"some value" and after.worker_pid == first.worker_pid


def test_an_empty_result_may_end_exactly_at_memory_end(setup) -> None:
    pool, plugin, *_ = setup
    assert pool.call(plugin, "probe_empty_at_end", [], None).ret == 0


def test_log_drops_unreadable_messages(setup) -> None:
    pool, plugin, hosts, *_ = setup
    assert pool.call(plugin, "probe_log_bad_utf8", [], None).ret == 0
    assert [m.message for m in hosts[-1].logged if isinstance(m, protocol.Log)] == ["fine"]


def test_exports_are_read_in_the_supervisor(setup, tmp_path: Path) -> None:
    _pool, plugin, *_ = setup
    exports = ModuleCache(tmp_path / "cache").exports(plugin.wasm_path)
    params, results = exports["http_post"]
    assert params == ("i32",) * 7 and results == ("i32",)
    assert exports["dealloc"].results == () and "memory" not in exports
