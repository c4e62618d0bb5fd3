"""The daemon's control socket serves the CLI's user and nobody else: not another uid, not a worker or anything a
worker starts (even with the token in hand), not a process without the token. Written from the attacker's side."""

from __future__ import annotations

import json
import socket
import stat
import struct
import threading
from pathlib import Path

import msgspec
import pytest

import wasm_fixtures
from supervisor.control import ControlServer, DaemonClient, Hello, Reply, Request, socket_path, token_path, \
    worker_lineage, write_token
from test_daemon import daemon  # noqa: F401 - the fixture
from test_worker_lifecycle import BODY
from wasm_fixtures import WASI_PROC_EXIT, make_guest


@pytest.fixture
def control(runtime_dir: Path, make_pool):
    """A real ControlServer on `runtime_dir` guarded as the daemon guards it, in front of a real WorkerPool whose
    workers are `control_client_worker`s. Yields (pool, requests the handler saw, refusals)."""
    pool = make_pool(worker_entry=wasm_fixtures.control_client_worker)
    seen: list[Request] = []
    refused: list[tuple[int, str]] = []

    def refuse_peer(pid: int) -> str | None:
        worker = worker_lineage(pid, pool.process_ids())
        return None if worker is None else f"pid {pid} is or descends from worker process {worker}"

    server = ControlServer(socket_path(runtime_dir), lambda r, _fd: (seen.append(r), Reply(ok=True))[1],
                           token=write_token(runtime_dir), refuse_peer=refuse_peer,
                           on_refused=lambda pid, why: refused.append((pid, why)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield pool, seen, refused
    server.shutdown()
    thread.join()
    server.server_close()


def test_a_worker_and_its_children_are_never_control_clients(tmp_path: Path, runtime_dir: Path, control):
    pool, seen, refused = control
    plugin = make_guest(tmp_path / "probe", BODY, extra_imports=WASI_PROC_EXIT)
    outcome = pool.call(plugin, "status", [], None)
    assert outcome.ret == 7
    report = json.loads((runtime_dir / "control-attempt.json").read_text())
    for who in ("worker", "child"):
        assert len(report[who]) == 2
        assert all(r.startswith("refused: control connection refused: pid ") for r in report[who]), report
        assert all("descends from worker process" in r for r in report[who])
    assert seen == []  # neither the call nor the shutdown reached the handler
    assert len(refused) == 4 and any(pid == outcome.worker_pid for pid, _why in refused)
    with DaemonClient(runtime_dir) as client:  # the CLI's user still gets in
        assert client.request(Request(op="ping")).ok
    assert [r.op for r in seen] == ["ping"]


def test_without_the_token_a_same_uid_process_is_refused(runtime_dir: Path, control):
    _pool, seen, refused = control
    assert stat.S_IMODE(token_path(runtime_dir).stat().st_mode) == 0o600
    for hello in (b"", msgspec.msgpack.encode(Hello(token=b"\0" * 32)), msgspec.msgpack.encode(Request(op="shutdown"))):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(socket_path(runtime_dir)))
            raw.sendall(struct.pack("!I", len(hello)) + hello)
            (length,) = struct.unpack("!I", raw.recv(4))
            reply = msgspec.msgpack.decode(raw.recv(length), type=Reply)
            assert (reply.ok, reply.error) == (False, "control connection refused: no valid control token")
            assert raw.recv(4) == b""  # and the daemon hung up
    assert seen == [] and [why for _pid, why in refused] == ["no valid control token"] * 3


def test_a_client_that_cannot_read_the_token_is_told_so(runtime_dir: Path, control):
    token_path(runtime_dir).unlink()
    with pytest.raises(Exception, match="cannot read the supervisor daemon's control token"):
        DaemonClient(runtime_dir)


def test_the_daemon_requires_the_token_and_removes_it_when_it_stops(daemon, run_tark):  # noqa: F811
    assert stat.S_IMODE(token_path(daemon).stat().st_mode) == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(socket_path(daemon)))
        frame = msgspec.msgpack.encode(Hello(token=b"x" * 32))
        raw.sendall(struct.pack("!I", len(frame)) + frame)
        (length,) = struct.unpack("!I", raw.recv(4))
        assert msgspec.msgpack.decode(raw.recv(length), type=Reply).error.endswith("no valid control token")
    with DaemonClient(daemon) as client:
        assert client.ping() > 0
    assert run_tark("supervisor", "stop").returncode == 0
    assert not token_path(daemon).exists() and not socket_path(daemon).exists()
