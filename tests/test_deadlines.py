"""One deadline per call, covering the host calls it waits on; cancellation that ends the work it cancels.

Attacker's side: a plugin whose one tark:http.get (or ws recv) hits a server that never answers, a plugin that
spins forever, and a user pressing Ctrl-C at the worst moments, in embedded and daemon mode. Timings are asserted
loosely (the machine is shared): "ended near the deadline, far before the server would have answered".
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from cap_support import http_server, reply
from wasm_fixtures import make_guest

BODY = r"""
  (func (export "fetch") (param i32 i32 i32 i32 i32) (result i32)
    (call $http_get (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "ws_wait") (param $url i32) (param $len i32) (param $ret i32) (result i32)
    (local $handle i64)
    ;; connect, then recv with a 60 s timeout on a server that never sends
    (drop (call $ws_connect (local.get $url) (local.get $len) (i32.const 0) (i32.const 0) (local.get $ret)))
    ;; the answer is {"handle":N,"ok":true}: the digit at offset 10
    (local.set $handle (i64.extend_i32_u (i32.sub (i32.load8_u (i32.add (local.get $ret) (i32.const 10)))
                                                  (i32.const 48))))
    (call $ws_recv (local.get $handle) (i64.const 60000) (i64.const 65536) (local.get $ret)))
  (func (export "spin") (param $ret i32) (result i32) (loop $l (br $l)) (i32.const 0))
  (func (export "ping") (param $ret i32) (result i32) (i32.const 0))
"""


class Hanging:
    """An HTTP server on 127.0.0.1 that accepts a request and never answers; it records when each client hangs up
    (that is how we see the supervisor really cancelled the request, instead of abandoning it)."""

    def __init__(self) -> None:
        self.received = threading.Event()
        self.hung_up = threading.Event()
        self.release = threading.Event()

    def handler(self, req) -> None:
        self.received.set()
        conn = req.connection
        while not self.release.is_set():
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable and not conn.recv(1, socket.MSG_PEEK):
                self.hung_up.set()
                return
        reply(req, 200, b"late")


@pytest.fixture
def hanging() -> Iterator[tuple[Hanging, int]]:
    server = Hanging()
    with http_server(server.handler) as port:
        yield server, port
        server.release.set()


def probe(tmp_path: Path, port: int, name: str = "probe"):
    return make_guest(tmp_path / name, BODY, name=name,
                      capabilities=f'http = ["http://127.0.0.1:{port}", "ws://127.0.0.1:{port}"]')


def test_the_deadline_covers_a_host_call_and_cancels_it(make_pool, tmp_path: Path, hanging) -> None:
    server, port = hanging
    plugin = probe(tmp_path, port)
    pool = make_pool()
    outcome = pool.call(plugin, "fetch", [f"http://127.0.0.1:{port}/slow".encode(), b"[]"], 65536, timeout_s=2)
    assert outcome.error_kind == "timeout"
    assert "within 2 s, the call's deadline" in outcome.error_message
    assert "tark:http.get" in outcome.error_message
    assert 1.9 < outcome.duration_s < 4  # the server would have answered never (http's own limit: 30 s)
    assert server.hung_up.wait(2), "the http request was abandoned, not cancelled"
    after = pool.call(plugin, "ping", [], 8, timeout_s=5)
    assert after.ok and after.duration_s < 2
    assert after.worker_pid != outcome.worker_pid  # the interrupted worker was replaced
    assert pool.status()[0].state == "running"  # a deadline is not a crash: no restart backoff, no parking


def test_the_deadline_cancels_a_websocket_recv(make_pool, tmp_path: Path) -> None:
    from websockets.sync.server import serve

    silent = threading.Event()

    def handler(ws) -> None:
        silent.wait(30)

    with serve(handler, "127.0.0.1", 0) as server:
        port = server.socket.getsockname()[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        plugin = probe(tmp_path, port)
        pool = make_pool()
        outcome = pool.call(plugin, "ws_wait", [f"ws://127.0.0.1:{port}/".encode()], 256, timeout_s=1.5)
        silent.set()
        server.shutdown()
    assert outcome.error_kind == "timeout" and "tark:ws.recv" in outcome.error_message
    assert outcome.duration_s < 3.5


def test_a_spinning_guest_ends_at_the_deadline_and_the_next_call_is_served_at_once(make_pool, tmp_path) -> None:
    plugin = probe(tmp_path, 1)
    pool = make_pool()
    outcome = pool.call(plugin, "spin", [], 8, timeout_s=0.5)
    assert outcome.error_kind == "timeout" and outcome.duration_s < 2
    started = time.monotonic()
    assert pool.call(plugin, "ping", [], 8).ok
    assert time.monotonic() - started < 2


def test_a_call_waiting_behind_another_fails_at_its_own_deadline(make_pool, tmp_path) -> None:
    plugin = probe(tmp_path, 1)
    pool = make_pool()
    first = threading.Thread(target=pool.call, args=(plugin, "spin", [], 8), kwargs={"timeout_s": 5})
    first.start()
    time.sleep(0.3)
    second = pool.call(plugin, "ping", [], 8, timeout_s=0.5)
    assert second.error_kind == "timeout" and "previous call was still running" in second.error_message
    assert second.duration_s < 2
    first.join()


def test_closing_the_pool_cancels_calls_in_flight(make_pool, tmp_path: Path, hanging) -> None:
    server, port = hanging
    plugin = probe(tmp_path, port)
    pool = make_pool()
    results = []
    caller = threading.Thread(target=lambda: results.append(pool.call(
        plugin, "fetch", [f"http://127.0.0.1:{port}/".encode(), b"[]"], 65536, timeout_s=60)))
    caller.start()
    assert server.received.wait(10)
    started = time.monotonic()
    pool.close()
    caller.join(5)
    assert not caller.is_alive() and time.monotonic() - started < 3
    assert results[0].error_kind == "cancelled" and "supervisor is stopping" in results[0].error_message
    assert server.hung_up.wait(2)


def test_a_cancel_fd_ends_the_call_when_the_caller_goes_away(make_pool, tmp_path: Path, hanging) -> None:
    server, port = hanging
    plugin = probe(tmp_path, port)
    pool = make_pool()
    ours, theirs = socket.socketpair()
    results = []
    caller = threading.Thread(target=lambda: results.append(pool.call(
        plugin, "fetch", [f"http://127.0.0.1:{port}/".encode(), b"[]"], 65536, timeout_s=60,
        cancel_fd=ours.fileno())))
    caller.start()
    assert server.received.wait(10)
    theirs.close()  # what a CLI killed by Ctrl-C does to its control connection
    caller.join(5)
    ours.close()
    assert results[0].error_kind == "cancelled" and "caller went away" in results[0].error_message
    assert server.hung_up.wait(2)
    assert pool.call(plugin, "ping", [], 8, timeout_s=5).ok


# ---------------------------------------------------------------------------- Ctrl-C on the real CLI


def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C as a terminal sends it: SIGINT to the CLI's whole process group."""
    os.killpg(process.pid, signal.SIGINT)
    _out, err = process.communicate(timeout=15)
    return process.returncode, err


def start_cli(tark_argv: list[str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([*tark_argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ))


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def a_worker_spins(pid: int, cpu_s: float = 0.2) -> bool:
    for child in descendants(pid):
        try:
            if child.cpu_times().user >= cpu_s:
                return True
        except psutil.Error:
            continue
    return False


def all_gone(processes: list[psutil.Process], within_s: float = 3.0) -> bool:
    _gone, alive = psutil.wait_procs(processes, timeout=within_s)
    return all(p.status() == psutil.STATUS_ZOMBIE for p in alive if p.is_running())


def wait_for(predicate, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def assert_interrupted(code: int, err: str) -> None:
    assert code == 130, err
    assert err.strip() == "Interrupted.", err
    assert "Traceback" not in err


@pytest.fixture
def installed(tmp_path: Path, cli, hanging):
    server, port = hanging
    probe(tmp_path, port)
    assert cli("plugin", "add", "--yes", str(tmp_path / "probe")).exit_code == 0
    return server, port


def worker_sockets() -> list[Path]:
    return list(Path(os.environ["TARK_RUNTIME_DIR"]).glob("w-*.sock"))


def test_ctrl_c_during_a_host_call_exits_130_and_leaves_nothing(installed, tark_argv) -> None:
    server, port = installed
    process = start_cli(tark_argv, "plugin", "call", "probe", "fetch", f"http://127.0.0.1:{port}/", "[]")
    assert server.received.wait(30)
    children = descendants(process.pid)
    assert_interrupted(*interrupt(process))
    assert server.hung_up.wait(2)
    assert all_gone(children)
    assert worker_sockets() == []


def test_ctrl_c_mid_call_exits_130_and_leaves_nothing(installed, tark_argv) -> None:
    process = start_cli(tark_argv, "plugin", "call", "probe", "spin")
    assert wait_for(lambda: len(descendants(process.pid)) >= 2)  # the fork server and the worker
    time.sleep(1.0)  # the worker is spinning in the guest by now
    children = descendants(process.pid)
    assert_interrupted(*interrupt(process))
    assert all_gone(children)
    assert worker_sockets() == []


def test_ctrl_c_while_the_worker_starts_exits_130_and_leaves_nothing(installed, tark_argv) -> None:
    process = start_cli(tark_argv, "plugin", "call", "probe", "ping")
    assert wait_for(lambda: bool(worker_sockets()))  # the endpoint is bound just before the worker starts
    children = descendants(process.pid)
    assert_interrupted(*interrupt(process))
    assert all_gone(children)
    assert worker_sockets() == []


@pytest.fixture
def daemon(installed, run_tark):
    started = run_tark("supervisor", "start")
    assert started.returncode == 0, started.stderr
    yield installed
    run_tark("supervisor", "stop")


def test_ctrl_c_through_the_daemon_cancels_the_call_and_the_next_one_runs_at_once(daemon, tark_argv,
                                                                                   run_tark) -> None:
    server, port = daemon
    process = start_cli(tark_argv, "plugin", "call", "probe", "fetch", f"http://127.0.0.1:{port}/", "[]")
    assert server.received.wait(30)
    assert_interrupted(*interrupt(process))
    assert server.hung_up.wait(3), "the daemon went on with the abandoned call"
    started = time.monotonic()
    done = run_tark("plugin", "call", "probe", "ping", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 4


def test_ctrl_c_through_the_daemon_stops_a_spinning_worker(daemon, tark_argv, run_tark) -> None:
    process = start_cli(tark_argv, "plugin", "call", "probe", "spin")
    # Ctrl-C once the call spins in the daemon's worker (a fixed sleep could hit a CLI still importing)
    assert wait_for(lambda: a_worker_spins(daemon_pid()))
    assert_interrupted(*interrupt(process))
    started = time.monotonic()
    done = run_tark("plugin", "call", "probe", "ping", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 4


def test_the_cli_timeout_flag_ends_a_call_stuck_in_http(installed, run_tark) -> None:
    _server, port = installed
    started = time.monotonic()
    done = run_tark("plugin", "call", "probe", "fetch", f"http://127.0.0.1:{port}/", "[]", "--timeout", "2")
    assert done.returncode == 1
    assert "within 2 s, the call's deadline" in done.stderr and "tark:http.get" in done.stderr
    assert time.monotonic() - started < 10  # includes the CLI's own start-up


# ---------------------------------------------------------------------------- stop that stops


def daemon_pid() -> int:
    return int((Path(os.environ["TARK_RUNTIME_DIR"]) / "supervisor.pid").read_text())


def busy_worker(tark_argv: list[str]) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A CLI whose call keeps a daemon worker spinning; returns it and the daemon's descendants (fork server,
    worker) once the worker runs."""
    caller = start_cli(tark_argv, "plugin", "call", "probe", "spin", "--timeout", "120")
    assert wait_for(lambda: len(descendants(daemon_pid())) >= 2)
    time.sleep(0.5)
    return caller, descendants(daemon_pid())


def test_stop_cancels_a_busy_call_and_returns_once_the_daemon_is_gone(daemon, tark_argv, run_tark) -> None:
    caller, workers = busy_worker(tark_argv)
    pid = daemon_pid()
    started = time.monotonic()
    done = run_tark("supervisor", "stop")
    assert done.returncode == 0, done.stderr
    assert f"stopped (pid {pid})" in done.stdout and "killed" not in done.stdout
    assert time.monotonic() - started < 8  # not the 120 s of the call
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert all_gone(workers)
    assert caller.wait(10) == 1  # the caller hears about it instead of hanging


def test_stop_force_kills_the_daemon_and_its_workers_during_a_busy_call(daemon, tark_argv, run_tark) -> None:
    caller, workers = busy_worker(tark_argv)
    started = time.monotonic()
    done = run_tark("supervisor", "stop", "--force")
    assert done.returncode == 0, done.stderr
    assert "killed" in done.stdout
    assert time.monotonic() - started < 8
    assert all_gone(workers, within_s=2)
    runtime = Path(os.environ["TARK_RUNTIME_DIR"])
    assert not (runtime / "supervisor.sock").exists() and not (runtime / "supervisor.pid").exists()
    assert worker_sockets() == []
    assert caller.wait(10) == 1
    assert run_tark("supervisor", "start").returncode == 0  # and a new daemon starts cleanly


def test_a_daemon_killed_with_sigkill_leaves_no_worker(daemon, tark_argv) -> None:
    caller, workers = busy_worker(tark_argv)
    os.kill(daemon_pid(), signal.SIGKILL)
    assert all_gone(workers, within_s=1.5)  # the fork server sees it go and kills its workers
    caller.wait(10)


ECHO_PROVIDER = Path(__file__).resolve().parents[1] / "examples" / "echo-provider"


@pytest.mark.skipif(not (ECHO_PROVIDER / "plugin.wasm").exists(), reason="examples not built (ops/scripts/test.sh)")
def test_ctrl_c_at_the_chat_repl_exits_130_without_a_traceback(cli, tark_argv) -> None:
    assert cli("plugin", "add", "--yes", str(ECHO_PROVIDER)).exit_code == 0
    process = subprocess.Popen([*tark_argv, "chat", "--provider", "echo-provider"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=dict(os.environ))
    first = process.stderr.readline()  # "Chatting with ...": the REPL waits for a line
    assert first.startswith("Chatting with"), first
    os.killpg(process.pid, signal.SIGINT)
    _out, err = process.communicate(timeout=15)
    assert process.returncode == 130, err
    assert err.strip() == "Interrupted." and "Traceback" not in err


STORAGE_BODY = r"""
  (data (i32.const 100) "key")
  (func (export "write") (param i32 i32) (result i32)
    (call $storage_set (i32.const 100) (i32.const 3) (local.get 0) (local.get 1)))
"""


def test_the_deadline_bounds_a_storage_write_waiting_for_another_writer(make_pool, tmp_path: Path) -> None:
    import sqlite3

    from supervisor.capabilities.storage import DB_FILE

    plugin = make_guest(tmp_path / "writer", STORAGE_BODY, name="writer", capabilities="storage = true")
    pool = make_pool()
    assert pool.call(plugin, "write", [b"first"], None).ret == 0  # the database exists
    # Another process (here: another connection) holds the write lock; the busy timeout alone would wait 5 s.
    holder = sqlite3.connect(plugin.data_dir / DB_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        outcome = pool.call(plugin, "write", [b"second"], None, timeout_s=1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outcome.duration_s < 3
    assert outcome.error_kind == "timeout" or outcome.ret == -1  # the write gave up at the deadline
    assert pool.call(plugin, "write", [b"third"], None, timeout_s=5).ret == 0
