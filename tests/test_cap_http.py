"""tark:http against real HTTP servers on 127.0.0.1: tark's JSON shapes and codes, plus the hardening."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from cap_support import http_server, make_host, reply
from policy.limits import Limits
from supervisor.capabilities.audit import read_audit
from supervisor.host import PluginHost
from worker import protocol


def get(host: PluginHost, url: str, headers: str = "") -> protocol.HostReply:
    return host.handle(protocol.HttpGet(host_call_id=7, url=url, headers=headers))


def post(host: PluginHost, url: str, body: str, headers: str = "") -> protocol.HostReply:
    return host.handle(protocol.HttpPost(host_call_id=8, url=url, body=body, headers=headers))


def answer(r: protocol.HostReply) -> dict:
    assert r.code == len(r.data) > 0
    return json.loads(r.data)


def allow(*ports: int, host: str = "127.0.0.1") -> str:
    return "http = [" + ", ".join(f'"http://{host}:{p}"' for p in ports) + "]"


def echo(req) -> None:
    length = int(req.headers.get("Content-Length") or 0)
    body = req.rfile.read(length).decode() if length else ""
    payload = {"method": req.command, "path": req.path, "body": body,
               "headers": [[k.lower(), v] for k, v in req.headers.items()]}
    reply(req, 200, json.dumps(payload).encode(), [("Content-Type", "application/json")])


def test_response_json_has_tark_shape_sorted_keys_and_repeated_headers(tmp_path: Path) -> None:
    def handler(req) -> None:
        reply(req, 404, "nicht gefunden \xff".encode("latin-1"),
              [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Odd", "caf\xe9"), ("X-Tab", "a\tb")])

    with http_server(handler) as port, make_host(tmp_path, allow(port)) as host:
        r = get(host, f"http://127.0.0.1:{port}/missing")
    assert r.host_call_id == 7
    assert r.data.startswith(b'{"body":"nicht gefunden \xef\xbf\xbd","headers":[["server","')
    result = answer(r)
    assert list(result) == ["body", "headers", "status"]
    assert result["status"] == 404
    headers = result["headers"]
    assert ["set-cookie", "a=1"] in headers and ["set-cookie", "b=2"] in headers
    assert ["x-odd", ""] in headers  # not visible ASCII -> ""
    assert ["x-tab", "a\tb"] in headers
    assert all(name == name.lower() for name, _ in headers)


def test_request_carries_guest_headers_only(tmp_path: Path) -> None:
    with http_server(echo) as port, make_host(tmp_path, allow(port)) as host:
        sent = json.loads(answer(post(host, f"http://127.0.0.1:{port}/p", '{"q":1}', '[["X-Api-Key","k1"]]'))["body"])
        assert sent["method"] == "POST" and sent["body"] == '{"q":1}'
        names = [name for name, _ in sent["headers"]]
        assert ["x-api-key", "k1"] in sent["headers"]
        assert "user-agent" not in names and "accept-encoding" not in names
        assert "content-type" not in names  # nothing implicit
        # other header shapes silently mean "no headers", as in tark
        for shape in ('{"X-Api-Key": "k1"}', "", "[[1, 2]]", '[["X-Api-Key"]]', "not json", "[" * 100_000):
            sent = json.loads(answer(get(host, f"http://127.0.0.1:{port}/", shape))["body"])
            assert "x-api-key" not in [name for name, _ in sent["headers"]], shape


@pytest.mark.parametrize("headers, message", [
    ('[["Bad Name", "v"]]', "invalid header name"),
    ('[["X-Ok", "line\\r\\nInjected: 1"]]', "invalid value for header"),
    ('[["Host", "internal.example"]]', "set by the host"),
    ('[["Transfer-Encoding", "chunked"]]', "set by the host"),
])
def test_invalid_request_headers_answer_an_error(tmp_path: Path, headers: str, message: str) -> None:
    hits = []
    with http_server(lambda req: (hits.append(req.path), reply(req, 200))) as port, \
            make_host(tmp_path, allow(port)) as host:
        result = answer(get(host, f"http://127.0.0.1:{port}/", headers))
    assert list(result) == ["error"] and message in result["error"]
    assert hits == []


def test_urls_outside_the_manifest_are_denied_with_minus_two_and_audited(tmp_path: Path) -> None:
    with http_server(echo) as port, make_host(tmp_path, allow(port) + "\n") as host:
        denied = [
            f"http://127.0.0.1:{port + 1}/",  # other port
            f"https://127.0.0.1:{port}/",  # other scheme
            f"http://user:pw@127.0.0.1:{port}/",  # user info
            f"http://127.0.0.1.evil.example:{port}/",
            "not a url",
            "file:///etc/passwd",
        ]
        for url in denied:
            assert get(host, url) == protocol.HostReply(host_call_id=7, code=-2, data=b""), url
        assert post(host, denied[0], "x").code == -2
    records = read_audit(tmp_path / "audit.log", decision="denied")
    assert [r["target"] for r in records] == denied + [denied[0]]
    assert {r["capability"] for r in records} == {"http"}


def test_redirects_are_followed_and_every_hop_rechecked(tmp_path: Path) -> None:
    other_hits = []
    with http_server(lambda req: (other_hits.append(req.path), reply(req, 200, b"leak"))) as other:
        def handler(req) -> None:
            if req.path == "/start":
                reply(req, 302, headers=[("Location", "/middle")])
            elif req.path == "/middle":
                reply(req, 307, headers=[("Location", f"http://127.0.0.1:{req.server.server_address[1]}/end")])
            elif req.path == "/see-other":
                req.rfile.read(int(req.headers["Content-Length"]))
                reply(req, 303, headers=[("Location", "/end")])
            elif req.path == "/away":
                reply(req, 301, headers=[("Location", f"http://127.0.0.1:{other}/secret")])
            elif req.path == "/loop":
                reply(req, 302, headers=[("Location", "/loop")])
            else:
                echo(req)

        with http_server(handler) as port, make_host(tmp_path, allow(port), limits=Limits(http_max_redirects=3)) as host:
            base = f"http://127.0.0.1:{port}"
            assert json.loads(answer(get(host, base + "/start"))["body"])["path"] == "/end"
            after_303 = json.loads(answer(post(host, base + "/see-other", "payload"))["body"])
            assert (after_303["method"], after_303["body"]) == ("GET", "")
            assert answer(get(host, base + "/away")) == {"error": f"redirect to http://127.0.0.1:{other}/secret not allowed"}
            assert answer(get(host, base + "/loop")) == {"error": "too many redirects (more than 3)"}
    assert other_hits == []
    (record,) = read_audit(tmp_path / "audit.log", decision="denied")
    assert record["target"] == f"http://127.0.0.1:{other}/secret" and "redirect from" in record["reason"]


def test_body_over_the_cap_is_an_error_with_or_without_content_length(tmp_path: Path) -> None:
    def handler(req) -> None:
        if req.path == "/sized":
            reply(req, 200, b"x" * 5000)
        else:  # chunked, no Content-Length: the cap must stop the stream
            req.send_response(200)
            req.send_header("Transfer-Encoding", "chunked")
            req.end_headers()
            for _ in range(10):
                req.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
            req.wfile.write(b"0\r\n\r\n")

    limits = Limits(http_max_response_body_bytes=1000)
    with http_server(handler) as port, make_host(tmp_path, allow(port), limits=limits) as host:
        for path in ("/sized", "/chunked"):
            assert answer(get(host, f"http://127.0.0.1:{port}{path}")) == {"error": "response body exceeds 1000 bytes"}


def test_result_larger_than_the_guest_buffer_is_replaced_by_an_error(tmp_path: Path) -> None:
    limits = Limits(max_result_bytes=1000)
    with http_server(lambda req: reply(req, 200, b"z" * 2000)) as port, \
            make_host(tmp_path, allow(port), limits=limits) as host:
        r = get(host, f"http://127.0.0.1:{port}/")
    assert len(r.data) <= 1000
    assert answer(r)["error"].startswith("response too large: ")


def test_slow_server_hits_the_total_timeout(tmp_path: Path) -> None:
    release = threading.Event()

    def handler(req) -> None:
        release.wait(5)
        reply(req, 200, b"late")

    with http_server(handler) as port, make_host(tmp_path, allow(port),
                                                 limits=Limits(http_total_timeout_s=0.5)) as host:
        started = time.monotonic()
        result = answer(get(host, f"http://127.0.0.1:{port}/"))
        elapsed = time.monotonic() - started
        release.set()
    assert list(result) == ["error"] and "timed out" in result["error"]
    assert elapsed < 2


def test_transport_errors_answer_error_json(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with make_host(tmp_path, allow(port)) as host:
            result = answer(get(host, f"http://127.0.0.1:{port}/"))
    assert list(result) == ["error"] and "refused" in result["error"].lower()


def _loopback_alias() -> str:
    name = socket.gethostname().lower()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip("the host name does not resolve")
    if not any(a.startswith("127.") or a == "::1" for a in addresses) or name == "localhost":
        pytest.skip("the host name does not resolve to a loopback address here")
    return name


def test_names_resolving_to_internal_addresses_need_a_literal_pattern(tmp_path: Path) -> None:
    alias = _loopback_alias()
    hits = []
    with http_server(lambda req: (hits.append(req.path), reply(req, 200, b"internal"))) as port:
        with make_host(tmp_path, allow(port, host=alias)) as host:
            result = answer(get(host, f"http://{alias}:{port}/"))
        assert "loopback address" in result["error"] and "literally" in result["error"]
        assert hits == []
        with make_host(tmp_path / "lit", f'http = ["http://127.0.0.1:{port}", "http://localhost:{port}"]') as host:
            assert answer(get(host, f"http://127.0.0.1:{port}/a"))["status"] == 200
            assert answer(get(host, f"http://localhost:{port}/b"))["status"] == 200
    assert hits == ["/a", "/b"]


def test_concurrent_requests_per_plugin_are_capped(tmp_path: Path) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(req) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        reply(req, 200, b"ok")

    def run(cap: int) -> int:
        state["max"] = 0
        with http_server(handler) as port, make_host(tmp_path / str(cap), allow(port),
                                                     limits=Limits(http_max_concurrent=cap)) as host:
            results = []
            threads = [threading.Thread(target=lambda: results.append(get(host, f"http://127.0.0.1:{port}/")))
                       for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [answer(r)["status"] for r in results] == [200, 200, 200]
        return state["max"]

    assert run(1) == 1
    assert run(3) == 3


def test_connections_are_reused_within_a_host(tmp_path: Path) -> None:
    peers = []

    def handler(req) -> None:
        peers.append(req.client_address)
        reply(req, 200, b"ok")

    with http_server(handler) as port, make_host(tmp_path, allow(port)) as host:
        for _ in range(3):
            assert answer(get(host, f"http://127.0.0.1:{port}/"))["status"] == 200
    assert len(set(peers)) == 1
