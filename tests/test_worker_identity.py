"""Only the worker the supervisor started can speak for its plugin, and no worker can make the supervisor hold
unbounded memory. Written from the attacker's side: a separate process of the same uid (what a compromised worker
is, for the supervisor) that races a sibling's start, and workers that flood their own endpoint.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import wasm_fixtures
from test_worker_lifecycle import BODY, process_gone
from wasm_fixtures import WASI_PROC_EXIT, make_guest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Connects to the first endpoint of plugin argv[2] that appears in argv[1], one connection per forged message, then
# keeps sending forged results for a while (during the sibling's calls).
ATTACKER = r"""
import glob, os, sys, time
import zmq
from worker import protocol

runtime, name = sys.argv[1], sys.argv[2]
print("ready", flush=True)
deadline = time.monotonic() + 10
while not (found := glob.glob(f"{runtime}/w-{name}-*.sock")):
    if time.monotonic() > deadline:
        sys.exit("no endpoint appeared")
    time.sleep(0.0005)
context = zmq.Context()
forged = [
    protocol.Ready(token=os.urandom(protocol.TOKEN_BYTES)),
    protocol.StartFailed(token=os.urandom(protocol.TOKEN_BYTES), message="forged: the plugin is broken"),
    protocol.InvokeResult(call_id=1, ret=666),
]
sockets = []
for message in forged:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect("ipc://" + found[0])
    socket.send(protocol.encode(message))
    sockets.append(socket)
print("sent", flush=True)
for call_id in range(1, 400):
    for socket in sockets:
        try:
            socket.send(protocol.encode(protocol.InvokeResult(call_id=call_id, ret=666)), zmq.NOBLOCK)
        except zmq.Again:
            pass
    time.sleep(0.005)
"""


@pytest.fixture
def plugin(tmp_path: Path):
    return make_guest(tmp_path / "probe", BODY, extra_imports=WASI_PROC_EXIT)


class Events:
    """Collects what the pool reports to the audit trail."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, plugin: str, kind: str, fields: dict[str, Any]) -> None:
        with self._lock:
            self.records.append((plugin, kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [fields for _plugin, k, fields in self.records if k == kind]


def test_a_process_that_connects_to_a_siblings_endpoint_first_cannot_speak_for_it(make_pool, plugin, runtime_dir):
    events = Events()
    pool = make_pool(worker_entry=wasm_fixtures.slow_start_worker, security_events=events)
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(runtime_dir), "probe"], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout.readline() == "ready\n"
        outcomes = [pool.call(plugin, "status", [], None) for _ in range(5)]
        assert attacker.stdout.readline() == "sent\n"  # the forged messages were on the endpoint before Ready
    finally:
        attacker.kill()
        attacker.wait()
    assert [(o.ret, o.error_kind) for o in outcomes] == [(7, None)] * 5
    assert len({o.worker_pid for o in outcomes}) == 1 and pool.status()[0].restarts == 0
    forged = events.of("forged_worker_message")
    assert {(f["message"], f["when"]) for f in forged} >= {
        ("Ready", "while the worker starts"),
        ("StartFailed", "while the worker starts"),
        ("InvokeResult", "while the worker starts"),
    }
    assert all(f["endpoint"].startswith(str(runtime_dir)) for f in forged)


def test_once_the_worker_is_in_its_endpoint_is_gone(make_pool, plugin, runtime_dir):
    pool = make_pool()
    assert pool.call(plugin, "status", [], None).ret == 7
    assert list(runtime_dir.glob("w-probe-*")) == []  # nobody else can connect to the worker's socket any more
    assert pool.call(plugin, "status", [], None).ret == 7


def test_a_worker_flooding_its_endpoint_outside_a_call_is_ended_and_supervisor_memory_stays_flat(make_pool, plugin):
    events = Events()
    pool = make_pool(worker_entry=wasm_fixtures.flooding_worker, security_events=events)
    me = psutil.Process()
    before = me.memory_info().rss
    first = pool.call(plugin, "status", [], None)
    assert first.ret == 7
    peak = before
    deadline = time.monotonic() + 10
    while pool.status()[0].state != "crashed" and time.monotonic() < deadline:
        peak = max(peak, me.memory_info().rss)
        time.sleep(0.02)
    [ended] = events.of("worker_message_outside_call")
    assert ended["pid"] == first.worker_pid and process_gone(first.worker_pid)
    peak = max(peak, me.memory_info().rss)
    flood_bytes = wasm_fixtures.FLOOD_MESSAGES * len(wasm_fixtures.FLOOD_FRAME)
    # bounded by RCVHWM + 1 messages of at most 8 MiB, never by the size of the flood (1.6 GiB)
    assert peak - before < 96 * 2**20 < flood_bytes // 10, f"supervisor grew by {(peak - before) >> 20} MiB"
    status = pool.status()[0]
    assert "outside a call" in status.last_error and status.state == "crashed"
    again = pool.call(plugin, "status", [], None)
    assert again.ret == 7 and again.worker_pid != first.worker_pid


def test_a_worker_speaking_between_calls_is_ended(make_pool, plugin):
    events = Events()
    pool = make_pool(worker_entry=wasm_fixtures.chatty_worker, security_events=events)
    first = pool.call(plugin, "status", [], None)
    assert first.ret == 7
    time.sleep(0.1)  # its extra message arrives; the next call (or the idle watch, whichever is first) sees it
    second = pool.call(plugin, "status", [], None)
    assert process_gone(first.worker_pid)
    assert [e["pid"] for e in events.of("worker_message_outside_call")][:1] == [first.worker_pid]
    if second.error_kind is not None:  # found queued when the call started
        assert second.error_kind == "invalid_message"
        assert second.error_message.endswith("sent an invalid message: Log outside a call")
    else:  # the idle watch got there first; the call ran on a new worker
        assert second.ret == 7 and second.worker_pid != first.worker_pid


def test_forged_messages_land_in_the_audit_trail(tmp_path: Path, plugin, runtime_dir):
    from supervisor.capabilities.audit import read_audit
    from supervisor.security_events import SecurityAudit
    from supervisor.modules import ModuleCache
    from supervisor.host import PluginHost
    from supervisor.workers import WorkerPool

    audit = SecurityAudit(tmp_path / "audit.log")
    pool = WorkerPool(runtime_dir, ModuleCache(tmp_path / "cache"), lambda p: PluginHost(p),
                      worker_entry=wasm_fixtures.chatty_worker, security_events=audit)
    try:
        pid = pool.call(plugin, "status", [], None).worker_pid
        assert process_gone(pid, within_s=3)
    finally:
        pool.close()
        audit.close()
    [record] = [r for r in read_audit(tmp_path / "audit.log") if r["kind"] == "worker_message_outside_call"]
    assert (record["plugin"], record["pid"], record["message"]) == ("probe", pid, "Log")
