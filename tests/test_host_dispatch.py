"""PluginHost: one entry point per plugin that dispatches every host request and never raises."""

from __future__ import annotations

import json
import logging
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cap_support import http_server, make_host, reply
from policy.capabilities import (Decision, EnvAccess, FsReadAccess, HttpAccess, ShellAccess, StorageAccess,
                                 check, refused_address_reason)
from policy.manifest import Capabilities
from supervisor.capabilities.audit import read_audit
from supervisor.host import PluginHost
from worker import protocol

CAPS = 'storage = true\nenv = ["API_KEY"]'


def test_every_host_request_type_is_dispatched(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("file")
    with http_server(lambda req: reply(req, 201, b"made")) as port, make_host(
            tmp_path, f'{CAPS}\nhttp = ["http://127.0.0.1:{port}"]\nfs_read = ["{tmp_path}/f.txt"]',
            environ={"API_KEY": "k"}) as host:
        replies = [host.handle(message) for message in (
            protocol.StorageSet(host_call_id=1, key="k", value="v"),
            protocol.StorageGet(host_call_id=2, key="k"),
            protocol.StorageDelete(host_call_id=3, key="k"),
            protocol.HttpGet(host_call_id=4, url=f"http://127.0.0.1:{port}/", headers=""),
            protocol.HttpPost(host_call_id=5, url=f"http://127.0.0.1:{port}/", body="b", headers="[]"),
            protocol.WsConnect(host_call_id=6, url="wss://nowhere.example/", headers=""),
            protocol.WsSend(host_call_id=7, handle=1, data="x"),
            protocol.WsRecv(host_call_id=8, handle=1, timeout_ms=0, max_bytes=10),
            protocol.WsClose(host_call_id=9, handle=1),
            protocol.EnvGet(host_call_id=10, name="API_KEY"),
            protocol.FsRead(host_call_id=11, path=f"{tmp_path}/f.txt"),
        )]
    assert [r.host_call_id for r in replies] == list(range(1, 12))
    assert [r.code for r in replies[:3]] == [0, 1, 0] and replies[1].data == b"v"
    assert json.loads(replies[3].data)["status"] == 201 and json.loads(replies[4].data)["body"] == "made"
    assert replies[5].code == -2  # not in the manifest
    assert replies[6].data == replies[7].data == b'{"error":"Unknown websocket handle","ok":false}'
    assert replies[8].data == b'{"ok":true}'
    assert replies[9].data == b"k" and replies[10].data == b"file"


def test_messages_that_are_not_host_requests_get_minus_one(tmp_path: Path) -> None:
    with make_host(tmp_path, CAPS) as host:
        assert host.handle(protocol.Ready(token=b"t" * protocol.TOKEN_BYTES)) == protocol.HostReply(host_call_id=0, code=-1)
        assert host.handle(protocol.Log(level="info", message="x")).code == -1


def test_storage_failures_are_answered_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = make_host(tmp_path, CAPS)
    host.plugin.data_dir.write_text("a file where the data directory should be")
    with host, caplog.at_level(logging.ERROR):
        assert host.handle(protocol.StorageSet(host_call_id=1, key="k", value="v")).code == -1
    assert "cannot open plugin storage" in caplog.text


def test_closed_host_answers_minus_one(tmp_path: Path) -> None:
    host = make_host(tmp_path, CAPS, environ={"API_KEY": "k"})
    host.close()
    assert host.handle(protocol.EnvGet(host_call_id=3, name="API_KEY")) == protocol.HostReply(host_call_id=3, code=-1)
    host.on_log(protocol.Log(level="info", message="still no exception"))


def test_denials_are_audited_in_a_private_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tark.audit"), make_host(tmp_path, "", name="nosy") as host:
        assert host.handle(protocol.EnvGet(host_call_id=1, name="AWS_SECRET_ACCESS_KEY")).code == -2
    log = tmp_path / "audit.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    (record,) = read_audit(log, decision="denied")
    assert record["plugin"] == "nosy" and record["capability"] == "env"
    assert record["target"] == "AWS_SECRET_ACCESS_KEY" and record["decision"] == "denied"
    assert record["reason"] and record["time"].endswith("+00:00")
    assert "denied env 'AWS_SECRET_ACCESS_KEY'" in caplog.text


def test_default_audit_log_is_in_the_data_root(tmp_path: Path, isolated_env: Path) -> None:
    from cap_support import make_plugin

    with PluginHost(make_plugin(tmp_path / "p")) as host:
        host.handle(protocol.FsRead(host_call_id=1, path="/etc/passwd"))
    assert read_audit(isolated_env / "audit.log", decision="denied")[0]["target"] == "/etc/passwd"


# --------------------------------------------------------------------------------- the policy function


def test_check_is_one_pure_decision_per_request_kind() -> None:
    caps = Capabilities(storage=True, http=("*.example.com", "http://127.0.0.1:8080"), env=("APP_*",),
                        fs_read=("~/creds/*.json",), shell=False)
    assert check(caps, StorageAccess()) == Decision(True, "storage granted", "storage")
    assert check(caps, HttpAccess("https://api.example.com/v1")).pattern == "*.example.com"
    assert not check(caps, HttpAccess("https://example.com/")).allowed  # apex is not a subdomain
    assert not check(caps, HttpAccess("http://api.example.com/")).allowed  # http is not https
    assert check(caps, HttpAccess("http://127.0.0.1:8080/x")).allowed
    assert not check(caps, HttpAccess("http://u@127.0.0.1:8080/")).allowed
    assert not check(caps, HttpAccess("::not a url::")).allowed
    assert check(caps, EnvAccess("APP_TOKEN")).pattern == "APP_*"
    assert not check(caps, EnvAccess("PATH")).allowed
    assert check(caps, FsReadAccess("/home/u/creds/a.json", home="/home/u")).allowed
    assert not check(caps, FsReadAccess("/home/u/creds/x/a.json", home="/home/u")).allowed
    assert not check(caps, ShellAccess("ls")).allowed
    assert not check(Capabilities(), StorageAccess()).allowed


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback address"), ("::1", "loopback address"), ("10.1.2.3", "private address"),
    ("192.168.0.1", "private address"), ("169.254.169.254", "link-local address"), ("0.0.0.0", "unspecified address"),
    ("::ffff:127.0.0.1", "loopback address"), ("fe80::1", "link-local address"), ("100.64.0.1", "non-public address"),
    ("93.184.216.34", None), ("2606:2800:220:1::", None),
])
def test_internal_addresses_are_classified(address: str, reason: str | None) -> None:
    assert refused_address_reason(address) == reason


# ------------------------------------------------------------------------------ anything a plugin sends

_text = st.text(max_size=64)
_i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _requests(port: int, tmp: str):
    url = st.one_of(_text, st.sampled_from([f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/",
                                            "http://[::1", "http://a@b/", f"http://127.0.0.1:{port}/\r\nX: y"]))
    path = st.one_of(_text, st.sampled_from([tmp, tmp + "/x", "~", "~/", "/proc/self/environ", "/dev/zero"]))
    ids = st.integers(min_value=0, max_value=2**63 - 1)
    return st.one_of(
        st.builds(protocol.StorageGet, host_call_id=ids, key=_text),
        st.builds(protocol.StorageSet, host_call_id=ids, key=_text, value=_text),
        st.builds(protocol.StorageDelete, host_call_id=ids, key=_text),
        st.builds(protocol.HttpGet, host_call_id=ids, url=url, headers=_text),
        st.builds(protocol.HttpPost, host_call_id=ids, url=url, body=_text, headers=_text),
        st.builds(protocol.WsConnect, host_call_id=ids, url=url, headers=_text),
        st.builds(protocol.WsSend, host_call_id=ids, handle=_i64, data=_text),
        st.builds(protocol.WsRecv, host_call_id=ids, handle=_i64, timeout_ms=st.integers(-5, 5), max_bytes=_i64),
        st.builds(protocol.WsClose, host_call_id=ids, handle=_i64),
        st.builds(protocol.EnvGet, host_call_id=ids, name=_text),
        st.builds(protocol.FsRead, host_call_id=ids, path=path),
    )


def test_no_plugin_input_makes_the_host_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        caps = f'{CAPS}\nhttp = ["http://127.0.0.1:{port}", "ws://127.0.0.1:{port}"]\nfs_read = ["{tmp_path}"]'
        with make_host(tmp_path, caps, environ={"API_KEY": "k"}) as host:

            @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
            @given(_requests(port, str(tmp_path)))
            def run(request) -> None:
                result = host.handle(request)
                assert isinstance(result, protocol.HostReply)
                assert result.host_call_id == request.host_call_id
                assert result.code in (-1, -2, -3) and result.data == b"" or result.code == len(result.data)
                protocol.encode(result)  # always a valid message for the worker

            with caplog.at_level(logging.ERROR, logger="tark.supervisor.host"):
                run()
    assert "internal error" not in caplog.text
