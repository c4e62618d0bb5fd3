"""Channel plugins end to end: `tark channel start|stop|send|status` against a real daemon (`tark supervisor start
--webhook-port 0`), real workers, and real HTTP requests to the daemon's webhook listener."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

import httpx
import psutil
import pytest

from supervisor.channels.messages import (ChannelDataError, parse_inbound, parse_send_result, parse_webhook_response,
                                          split_text, webhook_request_json)
from supervisor.channels.webhook import MAX_BODY_BYTES
from wasm_fixtures import make_guest

REPO = Path(__file__).resolve().parent.parent


def wat_data(offset: int, text: str) -> tuple[str, int]:
    """A WAT data segment holding `text` (UTF-8) at `offset`, and its length in bytes."""
    raw = text.encode()
    escaped = "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:02x}" for b in raw)
    return f'(data (i32.const {offset}) "{escaped}")', len(raw)


def copy_out(name: str, offset: int, text: str) -> str:
    """A data segment plus an export `(param $ret) -> len` that writes it."""
    data, length = wat_data(offset, text)
    return f"""{data}
  (func (export "{name}") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const {offset}) (i32.const {length})) (i32.const {length}))"""


def probe_body(*, info: str, poll: str, webhook: str, send: str) -> str:
    """A channel guest; `get KEY` reads its storage so tests can see what the plugin was given."""
    return f"""
  (global $started (mut i32) (i32.const 0))
  (global $polls (mut i32) (i32.const 0))
  (global $sends (mut i32) (i32.const 0))
  {copy_out("channel_info", 100, info)}
  (func (export "channel_start") (result i32) (global.set $started (i32.const 1)) (i32.const 0))
  (func (export "channel_stop") (result i32) (i32.const 0))
  {poll}
  {webhook}
  {send}
  (func (export "get") (param $k i32) (param $kl i32) (param $ret i32) (result i32)
    (call $storage_get (local.get $k) (local.get $kl) (local.get $ret)))
"""


INBOUND = '[{"conversation_id":"c-poll","user_id":"u1","text":"tick","metadata_json":"{}"}]'
_inbound_data, _inbound_len = wat_data(2000, INBOUND)

# The third poll of a started instance yields one message; an instance that was never started answers -7, so a
# message proves channel_start ran on the instance that is polled.
POLL_ONCE = f"""{_inbound_data}
  (func (export "channel_poll") (param $ret i32) (result i32)
    (if (i32.eqz (global.get $started)) (then (return (i32.const -7))))
    (global.set $polls (i32.add (global.get $polls) (i32.const 1)))
    (if (i32.eq (global.get $polls) (i32.const 3))
      (then (memory.copy (local.get $ret) (i32.const 2000) (i32.const {_inbound_len})) (return (i32.const {_inbound_len}))))
    (i32.store16 (local.get $ret) (i32.const 0x5d5b)) (i32.const 2))"""

# Each instance: poll 1 answers bad JSON (logged, polling goes on), poll 2 traps (the instance is restarted).
POLL_BAD_THEN_TRAP = """
  (func (export "channel_poll") (param $ret i32) (result i32)
    (global.set $polls (i32.add (global.get $polls) (i32.const 1)))
    (if (i32.ge_u (global.get $polls) (i32.const 2)) (then unreachable))
    (i32.store (local.get $ret) (i32.const 0x73706f7b)) (i32.const 4))"""  # "{ops"

WEBHOOK_RESPONSE = json.dumps({
    "status": 201, "headers": [["X-Probe", "yes"], ["Content-Type", "text/plain"]], "body": "pong",
    "messages": [{"conversation_id": "c-hook", "user_id": "u-hook", "text": "via webhook", "metadata_json": ""}],
})
_hook_data, _hook_len = wat_data(3000, WEBHOOK_RESPONSE)
_request_key, _ = wat_data(2900, "request")
# stores the request JSON under "request", answers WEBHOOK_RESPONSE
WEBHOOK_RECORD = f"""{_hook_data} {_request_key}
  (func (export "channel_handle_webhook") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (drop (call $storage_set (i32.const 2900) (i32.const 7) (local.get $in) (local.get $len)))
    (memory.copy (local.get $ret) (i32.const 3000) (i32.const {_hook_len})) (i32.const {_hook_len}))"""

_bad_data, _bad_len = wat_data(3600, "this is not json")
WEBHOOK_BAD_JSON = f"""{_bad_data}
  (func (export "channel_handle_webhook") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 3600) (i32.const {_bad_len})) (i32.const {_bad_len}))"""

_key_data, _ = wat_data(3700, "send0")
_ok_head, _ok_head_len = wat_data(3720, '{"success":true,"message_id":"m')
_ok_tail, _ok_tail_len = wat_data(3760, '","error":null}')
# stores send request n under "send<n>" (n = 1..9 per instance), answers message id "m<n>"
SEND_RECORD = f"""{_key_data} {_ok_head} {_ok_tail}
  (func (export "channel_send") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (local $out i32)
    (global.set $sends (i32.add (global.get $sends) (i32.const 1)))
    (i32.store8 (i32.const 3704) (i32.add (i32.const 48) (global.get $sends)))
    (drop (call $storage_set (i32.const 3700) (i32.const 5) (local.get $in) (local.get $len)))
    (memory.copy (local.get $ret) (i32.const 3720) (i32.const {_ok_head_len}))
    (local.set $out (i32.add (local.get $ret) (i32.const {_ok_head_len})))
    (i32.store8 (local.get $out) (i32.add (i32.const 48) (global.get $sends)))
    (memory.copy (i32.add (local.get $out) (i32.const 1)) (i32.const 3760) (i32.const {_ok_tail_len}))
    (i32.const {_ok_head_len + 1 + _ok_tail_len}))"""

_err_data, _err_len = wat_data(3800, '{"error":"no route"}')
SEND_ERROR_CODE = f"""{_err_data}
  (func (export "channel_send") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 3800) (i32.const {_err_len})) (i32.const -{_err_len}))"""

_refused_data, _refused_len = wat_data(3900, '{"success":false,"message_id":null,"error":"rate limited"}')
SEND_REFUSED = f"""{_refused_data}
  (func (export "channel_send") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 3900) (i32.const {_refused_len})) (i32.const {_refused_len}))"""


def info(name: str) -> str:
    return json.dumps({"id": name, "display_name": f"{name.title()} channel"})


PLUGINS = {
    "probe": probe_body(info=info("probe"), poll=POLL_ONCE, webhook=WEBHOOK_RECORD, send=SEND_RECORD),
    "trapper": probe_body(info=info("trapper"), poll=POLL_BAD_THEN_TRAP, webhook=WEBHOOK_RECORD, send=SEND_ERROR_CODE),
    "badhook": probe_body(info=info("badhook"), poll="", webhook=WEBHOOK_BAD_JSON, send=SEND_REFUSED),
}


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture
def install(tmp_path: Path, cli) -> Callable[[str], None]:
    def add(name: str) -> None:
        make_guest(tmp_path / "src" / name, PLUGINS[name], name=name, type="channel", capabilities="storage = true")
        done = cli("plugin", "add", "--yes", str(tmp_path / "src" / name))
        assert done.exit_code == 0, done.output

    return add


@pytest.fixture
def daemon(run_tark):
    started = run_tark("supervisor", "start", "--webhook-port", "0")
    assert started.returncode == 0, started.stderr
    yield Path(os.environ["TARK_RUNTIME_DIR"])
    stopped = run_tark("supervisor", "stop")
    assert stopped.returncode == 0, stopped.stderr


def tark_json(cli, *args: str) -> dict:
    done = cli(*args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def channel(cli, name: str) -> dict:
    (state,) = tark_json(cli, "channel", "status", name)["channels"]
    return state


def wait_for(predicate: Callable[[], object], timeout_s: float = 15.0) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def stored(cli, plugin: str, key: str) -> str:
    return tark_json(cli, "plugin", "call", plugin, "get", key)["output"]


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("name", ["echo-channel", "chan-wit"])  # the core module and its component twin
def test_example_channel_webhook_feeds_the_poll_loop(name, tmp_path: Path, cli, run_tark, daemon) -> None:
    spec = importlib.util.spec_from_file_location("examples_build", REPO / "examples" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    shutil.copytree(REPO / "examples" / name, tmp_path / "ex" / name,
                    ignore=shutil.ignore_patterns("*.wasm"))
    build.build_examples(tmp_path / "ex")
    assert cli("plugin", "add", "--yes", str(tmp_path / "ex" / name)).exit_code == 0

    started = run_tark("channel", "start", name, "--poll-ms", "20")
    assert started.returncode == 0, started.stderr
    assert f"✅ Started channel {name} (worker pid" in started.stdout
    state = channel(cli, name)
    assert (state["state"], state["display_name"], state["polling"]) == ("running", "Echo channel", True)
    url = state["webhook_url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"/channels/{name}/webhook")
    assert tark_json(cli, "supervisor", "status")["webhook"]["url"] == url.rsplit("/channels/", 1)[0]

    response = httpx.post(url, content="hello from outside")
    assert (response.status_code, response.headers["content-type"], response.json()) == (
        200, "application/json", {"queued": True})
    # the webhook's fresh instance stored the body; the poll loop's kept instance turns it into a message
    state = wait_for(lambda: (s := channel(cli, name))["inbound"] == 1 and s)
    assert state["inbox"][0] | {"received_at": 0} == {
        "received_at": 0, "source": "poll", "conversation_id": "webhook", "user_id": "webhook",
        "text": "hello from outside", "metadata_json": ""}
    assert state["polls"] > 1 and state["webhooks"] == 1 and state["last_error"] is None

    text = cli("channel", "status")
    assert f"{name} (Echo channel): running" in text.stdout and "[poll] webhook/webhook: hello from outside" in text.stdout

    stopped = cli("channel", "stop", name)
    assert stopped.exit_code == 0 and f"✅ Stopped channel {name}" in stopped.stdout
    state = channel(cli, name)
    assert state["state"] == "stopped"
    polls = state["polls"]
    time.sleep(0.2)
    assert channel(cli, name)["polls"] == polls  # the poll thread is gone
    assert httpx.post(url, content="late").status_code == 404  # only started channels are served
    again = cli("channel", "stop", name)
    assert again.exit_code == 1 and f"Error: Channel '{name}' is not running" in again.stderr


def test_webhook_round_trip_and_bad_requests(install, cli, run_tark, daemon) -> None:
    install("probe")
    install("badhook")
    for name in ("probe", "badhook"):
        assert cli("channel", "start", name).exit_code == 0
    probe_url = channel(cli, "probe")["webhook_url"]
    base = probe_url.rsplit("/channels/", 1)[0]

    response = httpx.post(probe_url + "?a=1&b=two", content=b"hi \xff",
                          headers={"X-Custom": "Value", "X-Latin": "caf\xe9".encode("latin-1")})
    assert (response.status_code, response.text, response.headers["x-probe"]) == (201, "pong", "yes")
    request = json.loads(stored(cli, "probe", "request"))
    assert (request["method"], request["path"], request["query"], request["body"]) == (
        "POST", "/channels/probe/webhook", "a=1&b=two", "hi \ufffd")
    headers = dict(request["headers"])
    assert headers["x-custom"] == "Value" and "x-latin" not in headers  # lower-case names, non-ASCII dropped
    state = channel(cli, "probe")
    assert [m["text"] for m in state["inbox"] if m["source"] == "webhook"] == ["via webhook"]

    bad = httpx.post(f"{base}/channels/badhook/webhook", content="x")
    assert bad.status_code == 500
    assert bad.text == "Channel 'badhook' webhook failed: Failed to parse webhook response JSON: Expecting value: line 1 column 1 (char 0)\n"
    assert "Traceback" not in bad.text
    assert "Failed to parse webhook response JSON" in channel(cli, "badhook")["last_error"]
    assert httpx.post(probe_url, content="still serving").status_code == 201  # other channels unaffected

    assert httpx.post(f"{base}/channels/ghost/webhook", content="x").status_code == 404
    assert httpx.get(probe_url).status_code == 405
    assert httpx.post(f"{base}/elsewhere", content="x").status_code == 404

    # oversize: refused from the Content-Length alone, before reading the body
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(f"POST /channels/probe/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}"
                    "\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")
    assert httpx.post(probe_url, content="x" * MAX_BODY_BYTES).status_code == 201  # exactly the cap is fine
    assert channel(cli, "probe")["state"] == "running"


def test_trapping_poll_restarts_then_parks_without_disturbing_others(install, cli, run_tark, daemon) -> None:
    install("probe")
    install("trapper")
    assert cli("channel", "start", "probe", "--poll-ms", "20").exit_code == 0
    assert cli("channel", "start", "trapper", "--poll-ms", "20").exit_code == 0

    crashed = wait_for(lambda: (s := channel(cli, "trapper"))["state"] == "crashed" and s)
    assert crashed["restarts"] == 5  # RestartPolicy().intensity: the 6th failure in the period parks it
    assert "Function channel_poll failed (trap)" in crashed["last_error"]
    log = (daemon / "supervisor.log").read_text()
    assert "Failed to parse channel poll JSON" in log and "channel trapper crashed" in log
    url = crashed["webhook_url"]
    assert httpx.post(url, content="x").status_code == 503

    probe = wait_for(lambda: (s := channel(cli, "probe"))["inbound"] == 1 and s)
    assert (probe["state"], probe["restarts"], probe["last_error"]) == ("running", 0, None)
    assert probe["inbox"][0]["text"] == "tick"  # channel_start ran on the polled instance (weakness 30)
    daemon_pid = tark_json(cli, "supervisor", "status")["pid"]
    workers = {p.pid for p in psutil.Process(daemon_pid).children(recursive=True)}
    assert probe["worker_pid"] in workers and crashed["worker_pid"] in workers | {None}
    assert probe["worker_pid"] != crashed["worker_pid"]

    # a parked channel starts again on request
    restarted = cli("channel", "start", "trapper")
    assert restarted.exit_code == 0, restarted.output
    assert channel(cli, "trapper")["started_at"] > crashed["started_at"]
    busy = cli("channel", "start", "probe")
    assert busy.exit_code == 1 and "Channel 'probe' is already running" in busy.stderr

    # stopping the daemon stops every channel and its worker
    assert run_tark("supervisor", "stop").returncode == 0
    for pid in (daemon_pid, probe["worker_pid"]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_send_splits_long_final_texts(install, cli, run_tark) -> None:
    install("probe")  # no daemon: send runs on an embedded supervisor
    text = "é" * 1000 + "x" * 5 + "€" * 700  # 2000 + 5 + 2100 bytes
    done = run_tark("channel", "send", "probe", "--conversation", "c1", "--message-id", "42", text)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "✅ Sent to c1 in 3 parts (message m1)\n"  # one instance: ids m1, m2, m3
    sent = [json.loads(stored(cli, "probe", f"send{n}")) for n in (1, 2, 3)]
    assert "".join(s["text"] for s in sent) == text
    assert [len(s["text"].encode()) for s in sent] == [1800, 1798, 507]  # a "€" (3 bytes) would not fit in 2
    assert [s["message_id"] for s in sent] == ["42", None, None]
    assert {(s["conversation_id"], s["is_final"], s["metadata_json"]) for s in sent} == {("c1", True, "")}

    partial = tark_json(cli, "channel", "send", "probe", "--conversation", "c2", "--not-final", text)
    assert partial == {"channel": "probe", "conversation_id": "c2", "message_ids": ["m1"], "chunk_bytes": [4105]}


def test_send_failures_are_clear_errors(install, cli) -> None:
    install("trapper")
    install("badhook")
    done = cli("channel", "send", "trapper", "--conversation", "c1", "hi")
    assert done.exit_code == 1
    assert done.stderr == 'Error: Function channel_send failed with error code: -20 ({"error":"no route"})\n'
    done = cli("channel", "send", "badhook", "--conversation", "c1", "hi")
    assert done.exit_code == 1 and done.stderr == "Error: Channel 'badhook' could not send to c1: rate limited\n"
    done = cli("channel", "send", "ghost", "--conversation", "c1", "hi")
    assert done.exit_code == 1 and done.stderr == "Error: Plugin 'ghost' not found\n"
    done = cli("channel", "send", "badhook", "hi")
    assert done.exit_code == 2 and "Missing option '--conversation'" in done.stderr


def test_start_needs_a_daemon_and_a_channel_plugin(tmp_path: Path, install, run_tark, cli) -> None:
    install("probe")
    done = cli("channel", "start", "probe")
    assert done.exit_code == 1 and "Error: No supervisor daemon is running" in done.stderr
    assert "tark supervisor start" in done.stderr
    assert tark_json(cli, "channel", "status") == {"daemon": False, "webhook": None, "channels": []}

    make_guest(tmp_path / "tool", "", name="notachannel", type="tool")
    assert cli("plugin", "add", "--yes", str(tmp_path / "tool")).exit_code == 0
    failing = probe_body(info=info("failing"), poll="", webhook="", send="").replace(
        "(global.set $started (i32.const 1)) (i32.const 0)", "(i32.const -3)")
    make_guest(tmp_path / "failing", failing, name="failing", type="channel")
    assert cli("plugin", "add", "--yes", str(tmp_path / "failing")).exit_code == 0
    started = run_tark("supervisor", "start", "--webhook-port", "0")
    assert started.returncode == 0, started.stderr
    try:
        done = cli("channel", "start", "notachannel")
        assert done.exit_code == 1 and done.stderr == "Error: Plugin 'notachannel' is a tool plugin, not a channel\n"
        done = cli("channel", "start", "failing")
        assert done.exit_code == 1 and done.stderr == "Error: Channel start failed with error code: -3\n"
        assert channel(cli, "failing")["state"] == "stopped"
        done = cli("channel", "status", "ghost")
        assert done.exit_code == 1 and "Error: Channel 'ghost' has not been started" in done.stderr
        assert cli("plugin", "disable", "probe").exit_code == 0
        done = cli("channel", "start", "probe")
        assert done.exit_code == 1 and "Error: Plugin 'probe' is disabled" in done.stderr
    finally:
        assert run_tark("supervisor", "stop").returncode == 0


def test_an_explicit_busy_webhook_port_fails_the_start(cli, run_tark) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_tark("supervisor", "start", "--webhook-port", str(port))
    assert done.returncode == 1
    assert f"cannot serve channel webhooks on 127.0.0.1:{port}" in done.stderr
    assert tark_json(cli, "supervisor", "status")["running"] is False


OAUTH = """
[oauth]
flow = "pkce"
auth_url = "https://auth.example.invalid/authorize"
token_url = "https://auth.example.invalid/token"
client_id = "tark"
scopes = ["chat"]
redirect_uri = "http://127.0.0.1:8976/callback"
"""
_ok_send, _ok_send_len = wat_data(4000, '{"success":true,"message_id":"a1","error":null}')
# Every operation first needs channel_auth_init on its own instance: start, poll, webhook and send fail without it.
AUTHED = probe_body(info=info("authed"), poll=POLL_ONCE, webhook=WEBHOOK_RECORD, send=f"""{_ok_send}
  (func (export "channel_send") (param $in i32) (param $len i32) (param $ret i32) (result i32)
    (if (i32.eqz (global.get $authed)) (then (return (i32.const -9))))
    (memory.copy (local.get $ret) (i32.const 4000) (i32.const {_ok_send_len})) (i32.const {_ok_send_len}))""").replace(
    "(func (export \"channel_start\") (result i32)",
    """(global $authed (mut i32) (i32.const 0))
  (func (export "channel_auth_init") (param $p i32) (param $l i32) (result i32)
    (global.set $authed (i32.const 1)) (drop (call $storage_set (i32.const 4100) (i32.const 5) (local.get $p) (local.get $l)))
    (i32.const 0))
  (data (i32.const 4100) "creds")
  (func (export "channel_start") (result i32) (if (i32.eqz (global.get $authed)) (then (return (i32.const -9))))""").replace(
    "(func (export \"channel_handle_webhook\") (param $in i32) (param $len i32) (param $ret i32) (result i32)",
    "(func (export \"channel_handle_webhook\") (param $in i32) (param $len i32) (param $ret i32) (result i32)\n"
    "    (if (i32.eqz (global.get $authed)) (then (return (i32.const -9))))")


def test_stored_credentials_reach_channel_auth_init_before_every_operation(tmp_path: Path, cli, daemon) -> None:
    make_guest(tmp_path / "authed", AUTHED, name="authed", type="channel", capabilities="storage = true")
    manifest = tmp_path / "authed" / "plugin.toml"
    manifest.write_text(manifest.read_text() + OAUTH)
    assert cli("plugin", "add", "--yes", str(tmp_path / "authed")).exit_code == 0
    done = cli("channel", "start", "authed")
    assert done.exit_code == 1 and done.stderr == "Error: Channel start failed with error code: -9\n"  # no credentials

    credentials = Path(os.environ["TARK_CONFIG_DIR"]) / "authed_oauth.json"
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text('{"tokens":{"access_token":"t0k"}}')
    assert cli("channel", "start", "authed", "--poll-ms", "20").exit_code == 0
    assert stored(cli, "authed", "creds") == '{"tokens":{"access_token":"t0k"}}'
    state = wait_for(lambda: (s := channel(cli, "authed"))["inbound"] == 1 and s)  # the kept instance polls
    assert httpx.post(state["webhook_url"], content="x").status_code == 201  # the webhook's own instance
    sent = cli("channel", "send", "authed", "--conversation", "c", "hi")
    assert sent.exit_code == 0 and sent.stdout == "✅ Sent to c (message a1)\n"
    assert channel(cli, "authed")["last_error"] is None


# ---------------------------------------------------------------------------------------------- pure parts

def test_split_text_cuts_between_characters() -> None:
    assert split_text("") == [""]
    assert split_text("abc", 4) == ["abc"]
    assert split_text("aé€😀b", 4) == ["aé", "€", "😀", "b"]
    chunks = split_text("😀" * 1000)
    assert all(len(c.encode()) <= 1800 for c in chunks) and "".join(chunks) == "😀" * 1000
    assert [len(c.encode()) for c in chunks] == [1800, 1800, 400]


def test_plugin_json_is_validated() -> None:
    assert parse_inbound('[{"conversation_id":"c","user_id":"u","text":"t"}]')[0].metadata_json == ""
    for bad, message in [
        ("{", "Failed to parse channel poll JSON: Expecting property name"),
        ("{}", "expected an array of messages"),
        ('[{"conversation_id":"c","user_id":"u"}]', "'text' is missing"),
        ('[{"conversation_id":1,"user_id":"u","text":"t"}]', "'conversation_id' is a int, not a string"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ]:
        with pytest.raises(ChannelDataError, match=message):
            parse_inbound(bad)
    response = parse_webhook_response('{"status":99,"headers":[["Content-Length","9"],["X-A","b"]]}')
    assert (response.status, response.headers, response.body, response.messages) == (200, (("X-A", "b"),), "", ())
    for bad in ('{"status":"200"}', '{"status":200,"headers":[["Bad Name","v"]]}',
                '{"status":200,"headers":[["X","a\\nb"]]}', '{"status":200,"headers":{"a":"b"}}'):
        with pytest.raises(ChannelDataError):
            parse_webhook_response(bad)
    assert parse_send_result('{"success":true,"message_id":42}').message_id == "42"
    with pytest.raises(ChannelDataError, match="'success' must be true or false"):
        parse_send_result('{"message_id":"1"}')


def test_webhook_request_json_follows_the_abi() -> None:
    request = json.loads(webhook_request_json("POST", "/channels/x/webhook", "", [("X-A", "1"), ("X-B", "\x01")],
                                              b"\xffok"))
    assert request == {"method": "POST", "path": "/channels/x/webhook", "query": None,
                       "headers": [["x-a", "1"]], "body": "\ufffdok"}
