"""The fork server workers are forked from: private, preloaded with worker code only, robust, restartable, and
leaving nothing behind. Attacker-side: what a same-uid process could reach of it, garbage on its channel, killing
it under running workers."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import psutil
import pytest

import forkserver_probe
from supervisor.forkserver import ENV_ALLOWED, ForkServer, ForkServerError
from test_worker_lifecycle import BODY, process_gone
from wasm_fixtures import WASI_PROC_EXIT, make_guest


@pytest.fixture
def server():
    fork_server = ForkServer({"PATH": os.environ["PATH"], "HOME": "/root", "API_TOKEN": "s3cret", "LANG": "C.UTF-8"})
    yield fork_server
    fork_server.close()


def probe(server: ForkServer, tmp_path: Path, name: str = "report.json") -> dict:
    out = tmp_path / name
    process = server.start(forkserver_probe.report, str(out).encode())
    process.join(10)
    assert process.exitcode == 0
    process.close()
    return json.loads(out.read_text())


def test_a_worker_gets_only_worker_code_stdio_a_session_of_its_own_and_a_scrubbed_environment(server, tmp_path):
    seen = probe(server, tmp_path)
    modules = seen["modules"]
    assert {"wasmtime", "zmq", "worker.main", "worker.engine", "worker.channel"} <= set(modules)
    # Nothing of the supervisor's side: its code, its libraries, the test runner, the script that started it.
    supervisor_side = ("supervisor", "ops", "pytest", "_pytest", "wasm_fixtures", "test_forkserver",
                       "jsonschema", "httpx", "httpcore", "click", "rich", "cattrs", "platformdirs", "websockets",
                       "prometheus_client", "multiprocess", "sqlite3", "hypothesis", "argon2", "cryptography")
    assert [m for m in modules if m.split(".")[0] in supervisor_side] == []
    assert "__mp_main__" not in modules and seen["main_script"] is None  # no script re-run in the fork server
    # Work done once in the fork server instead of in every worker (docs/performance.md, "Worker start").
    assert {"encodings.utf_16", "encodings.utf_32", "encodings.latin_1"} <= set(modules)
    assert seen["seccomp_compiled"]
    assert seen["sid"] == seen["pgid"] == seen["pid"]  # no terminal, no Ctrl-C from the supervisor's group
    assert seen["ppid"] == server.pid
    assert seen["dumpable"] == 0  # as the fork server it inherited this from: no ptrace by other same-uid processes
    assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) == 4  # stdio + the listing's own descriptor
    assert seen["environ"] == {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    assert all(ENV_ALLOWED.fullmatch(name) for name in seen["environ"])


def test_the_fork_server_has_nothing_anyone_could_connect_to_and_leaves_nothing_behind(server, tmp_path):
    temp = set(os.listdir(tempfile.gettempdir()))
    probe(server, tmp_path)
    fork_server = psutil.Process(server.pid)
    sockets = fork_server.net_connections(kind="unix")
    assert sockets and all(s.laddr == "" and s.raddr == "" for s in sockets)  # an unnamed socketpair end only
    server.close()
    assert process_gone(fork_server.pid)
    assert {n for n in set(os.listdir(tempfile.gettempdir())) - temp if n.startswith("pymp-")} == set()


def test_garbage_on_the_channel_is_refused_and_the_server_keeps_working(server, tmp_path):
    probe(server, tmp_path, "first.json")
    control = server._control  # only the supervisor holds this end; a bug there must not kill the server
    for garbage in (b"", b"\xc1 not msgpack", b"\x93" * 100):
        control.send(garbage)
        if garbage:
            reply, pidfd = server._await_reply(5)
            assert reply.error.startswith("invalid fork request: ") and pidfd is None
    assert probe(server, tmp_path, "second.json")["ppid"] == server.pid


def test_exit_status_and_kill_are_reported(server):
    process = server.start(forkserver_probe.exit_with, b"3")
    process.join(10)
    assert (process.is_alive(), process.exitcode) == (False, 3)
    process.close()
    process = server.start(forkserver_probe.linger, b"30")
    assert process.is_alive()
    process.kill()
    process.join(5)
    assert process.exitcode == -signal.SIGKILL
    process.close()


def test_an_entry_that_is_not_a_module_function_is_refused(server):
    with pytest.raises(ForkServerError, match="module-level function"):
        server.start(lambda spec: None, b"")


def test_a_killed_fork_server_is_replaced_and_its_running_workers_keep_working(make_pool, tmp_path):
    pool = make_pool()
    first = make_guest(tmp_path / "first", BODY, name="first", extra_imports=WASI_PROC_EXIT)
    second = make_guest(tmp_path / "second", BODY, name="second", extra_imports=WASI_PROC_EXIT)
    running = pool.call(first, "status", [], None)
    old_server = pool._fork_server.pid
    os.kill(old_server, signal.SIGKILL)
    assert process_gone(old_server)
    again = pool.call(first, "status", [], None)
    assert (again.ret, again.worker_pid) == (7, running.worker_pid)  # not reported crashed, not restarted
    started = pool.call(second, "status", [], None)  # a new worker: a new fork server
    assert started.ret == 7 and pool._fork_server.pid not in (None, old_server)
    assert [s.restarts for s in pool.status()] == [0, 0]
    pool.stop("first")
    assert process_gone(running.worker_pid)


def test_a_wedged_fork_server_is_replaced_without_taking_its_workers_along():
    server = ForkServer(request_timeout_s=0.5)
    try:
        running = server.start(forkserver_probe.linger, b"30")
        wedged = server.pid
        os.kill(wedged, signal.SIGSTOP)  # what any process of the uid could do to it
        started = server.start(forkserver_probe.linger, b"30")
        assert server.pid != wedged and process_gone(wedged)
        assert running.is_alive() and started.is_alive()
        for process in (running, started):  # the pidfds still work, whoever is their parent now
            process.kill()
            process.join(5)
            assert not process.is_alive()
            process.close()
        assert started.exitcode == -signal.SIGKILL  # reported by the new server; the old one cannot report
    finally:
        server.close()
