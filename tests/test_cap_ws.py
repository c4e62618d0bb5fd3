"""tark:ws against a real websocket server on 127.0.0.1: tark's JSON shapes, per-plugin handles, real close."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from cap_support import make_host
from policy.limits import Limits
from supervisor.capabilities.audit import read_audit
from supervisor.host import PluginHost
from worker import protocol

OK = b'{"ok":true}'
UNKNOWN = b'{"error":"Unknown websocket handle","ok":false}'
TIMEOUT = b'{"closed":false,"error":null,"message":null,"ok":true}'
TOO_LARGE = b'{"closed":false,"error":"message_too_large","message":null,"ok":true}'


class Server:
    def __init__(self) -> None:
        self.closed_paths: list[str] = []
        self.headers: dict[str, str] = {}

    def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path
        self.headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        try:
            if path == "/echo":
                for message in ws:
                    ws.send(message)
            elif path == "/close":
                ws.recv()
                ws.close(4000, "bye")
            elif path == "/big":
                ws.send("x" * 11)
                ws.send("y" * 65537)
                ws.send("small")
                ws.recv()
            elif path == "/binary":
                ws.send(b"\x00\x01")
                ws.send("text")
                ws.recv()
            else:
                ws.recv()
        except ConnectionClosed:
            pass
        self.closed_paths.append(path)


@contextlib.contextmanager
def ws_server() -> Iterator[tuple[Server, int]]:
    state = Server()
    with serve(state.handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield state, server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join()


def connect(host: PluginHost, url: str, headers: str = "") -> protocol.HostReply:
    return host.handle(protocol.WsConnect(host_call_id=1, url=url, headers=headers))


def send(host: PluginHost, handle: int, data: str) -> bytes:
    return host.handle(protocol.WsSend(host_call_id=2, handle=handle, data=data)).data


def recv(host: PluginHost, handle: int, timeout_ms: int = 2000, max_bytes: int = 65536) -> bytes:
    return host.handle(protocol.WsRecv(host_call_id=3, handle=handle, timeout_ms=timeout_ms, max_bytes=max_bytes)).data


def close(host: PluginHost, handle: int) -> bytes:
    return host.handle(protocol.WsClose(host_call_id=4, handle=handle)).data


def allow(port: int, scheme: str = "ws") -> str:
    return f'http = ["{scheme}://127.0.0.1:{port}"]'


def test_echo_round_trip_with_tark_shapes(tmp_path: Path) -> None:
    with ws_server() as (_, port), make_host(tmp_path, allow(port)) as host:
        r = connect(host, f"ws://127.0.0.1:{port}/echo")
        assert r.data == b'{"handle":1,"ok":true}' and r.code == len(r.data)
        assert send(host, 1, "héllo") == OK
        assert recv(host, 1) == '{"closed":false,"error":null,"message":"héllo","ok":true}'.encode()
        started = time.monotonic()
        assert recv(host, 1, timeout_ms=200) == TIMEOUT
        assert 0.15 < time.monotonic() - started < 1.5
        assert recv(host, 1, timeout_ms=-5) == TIMEOUT  # negative counts as 0
        assert connect(host, f"ws://127.0.0.1:{port}/echo").data == b'{"handle":2,"ok":true}'


def test_server_close_is_reported_once_then_recv_failed(tmp_path: Path) -> None:
    with ws_server() as (_, port), make_host(tmp_path, allow(port)) as host:
        connect(host, f"ws://127.0.0.1:{port}/close")
        assert send(host, 1, "go") == OK
        assert recv(host, 1) == b'{"closed":true,"error":"close:4000 bye","message":null,"ok":true}'
        assert recv(host, 1) == b'{"closed":true,"error":"recv_failed","message":null,"ok":true}'
        assert send(host, 1, "again") == b'{"error":"WebSocket send failed","ok":false}'
        assert close(host, 1) == OK


def test_oversize_messages_are_discarded_and_the_connection_kept(tmp_path: Path) -> None:
    with ws_server() as (_, port), make_host(tmp_path, allow(port)) as host:
        connect(host, f"ws://127.0.0.1:{port}/big")
        assert recv(host, 1, max_bytes=10) == TOO_LARGE  # 11 bytes
        assert recv(host, 1, max_bytes=1_000_000) == TOO_LARGE  # max_bytes is capped at 65536
        assert recv(host, 1, max_bytes=10) == b'{"closed":false,"error":null,"message":"small","ok":true}'


def test_binary_frames_are_never_delivered(tmp_path: Path) -> None:
    with ws_server() as (_, port), make_host(tmp_path, allow(port)) as host:
        connect(host, f"ws://127.0.0.1:{port}/binary")
        assert recv(host, 1) == b'{"closed":false,"error":null,"message":"text","ok":true}'


def test_handles_belong_to_one_plugin(tmp_path: Path) -> None:
    with ws_server() as (server, port), make_host(tmp_path, allow(port), name="owner") as owner, \
            make_host(tmp_path, allow(port), name="thief") as thief:
        assert connect(owner, f"ws://127.0.0.1:{port}/echo").data == b'{"handle":1,"ok":true}'
        assert send(thief, 1, "hijack") == UNKNOWN
        assert recv(thief, 1, timeout_ms=0) == UNKNOWN
        assert close(thief, 1) == OK  # tark's close always answers ok ...
        assert send(owner, 1, "still mine") == OK  # ... but it closed nothing of the owner's
        assert recv(owner, 1) == b'{"closed":false,"error":null,"message":"still mine","ok":true}'
        assert server.closed_paths == []


def test_recv_waits_only_on_its_own_socket(tmp_path: Path) -> None:
    with ws_server() as (_, port), make_host(tmp_path, allow(port)) as host:
        connect(host, f"ws://127.0.0.1:{port}/echo")
        connect(host, f"ws://127.0.0.1:{port}/echo")
        waiting = threading.Thread(target=recv, args=(host, 1, 1500))
        waiting.start()
        time.sleep(0.05)
        started = time.monotonic()
        assert send(host, 2, "ping") == OK
        assert recv(host, 2) == b'{"closed":false,"error":null,"message":"ping","ok":true}'
        assert time.monotonic() - started < 0.5
        waiting.join()


def test_close_really_closes_the_connection(tmp_path: Path) -> None:
    with ws_server() as (server, port), make_host(tmp_path, allow(port)) as host:
        connect(host, f"ws://127.0.0.1:{port}/idle")
        assert close(host, 1) == OK
        deadline = time.monotonic() + 3
        while not server.closed_paths and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.closed_paths == ["/idle"]
        assert send(host, 1, "x") == UNKNOWN


def test_host_close_closes_every_socket(tmp_path: Path) -> None:
    with ws_server() as (server, port):
        host = make_host(tmp_path, allow(port))
        connect(host, f"ws://127.0.0.1:{port}/idle")
        connect(host, f"ws://127.0.0.1:{port}/echo")
        host.close()
        deadline = time.monotonic() + 3
        while len(server.closed_paths) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(server.closed_paths) == ["/echo", "/idle"]


def test_guest_headers_reach_the_handshake_without_a_user_agent(tmp_path: Path) -> None:
    with ws_server() as (server, port), make_host(tmp_path, allow(port)) as host:
        headers = '[["Authorization","Bot t0k"],["Bad Name","x"],["Sec-WebSocket-Key","forged"]]'
        assert json.loads(connect(host, f"ws://127.0.0.1:{port}/idle", headers).data)["ok"] is True
    assert server.headers["authorization"] == "Bot t0k"
    assert server.headers["sec-websocket-key"] != "forged"
    assert "user-agent" not in server.headers and "bad name" not in server.headers


def test_policy_denials_and_scheme_rules(tmp_path: Path) -> None:
    with ws_server() as (_, port):
        with make_host(tmp_path, allow(port)) as host:
            assert connect(host, f"ws://127.0.0.1:{port + 1}/echo").code == -2
            assert connect(host, f"wss://127.0.0.1:{port}/echo").code == -2  # scheme family differs
            assert json.loads(connect(host, f"http://127.0.0.1:{port}/echo").data) == {
                "error": "Only wss:// URLs are allowed", "ok": False}
        with make_host(tmp_path / "bare", 'http = ["127.0.0.1"]', audit_path=tmp_path / "audit.log") as host:
            assert connect(host, f"ws://127.0.0.1:{port}/echo").code == -2  # bare host = wss on 443 only
    records = read_audit(tmp_path / "audit.log", decision="denied")
    assert [r["target"] for r in records] == [f"ws://127.0.0.1:{port + 1}/echo", f"wss://127.0.0.1:{port}/echo",
                                             f"ws://127.0.0.1:{port}/echo"]


def test_connect_failures_and_the_handle_cap(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        with make_host(tmp_path / "dead", allow(dead)) as host:
            result = json.loads(connect(host, f"ws://127.0.0.1:{dead}/").data)
            assert result["ok"] is False and "WebSocket connect failed" in result["error"]
    with ws_server() as (_, port), make_host(tmp_path, allow(port), limits=Limits(ws_max_handles=2)) as host:
        for _ in range(2):
            assert json.loads(connect(host, f"ws://127.0.0.1:{port}/idle").data)["ok"] is True
        result = json.loads(connect(host, f"ws://127.0.0.1:{port}/idle").data)
        assert result["ok"] is False and "too many open websockets" in result["error"]
        close(host, 1)
        assert json.loads(connect(host, f"ws://127.0.0.1:{port}/idle").data) == {"handle": 3, "ok": True}


def test_names_resolving_to_loopback_are_refused(tmp_path: Path) -> None:
    alias = socket.gethostname().lower()
    try:
        loopback = any(info[4][0].startswith("127.") for info in socket.getaddrinfo(alias, 80))
    except OSError:
        loopback = False
    if not loopback or alias == "localhost":
        pytest.skip("the host name does not resolve to a loopback address here")
    with ws_server() as (server, port), make_host(tmp_path, f'http = ["ws://{alias}:{port}"]') as host:
        result = json.loads(connect(host, f"ws://{alias}:{port}/echo").data)
    assert result["ok"] is False and "loopback address" in result["error"]
    assert server.headers == {}
