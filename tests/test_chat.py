"""`tark chat`: provider plugins selected per ABI §3.1, each running in its own worker; the adapter mode through
`provider_chat`, the auth-only mode talking to a real OpenAI-compatible server on 127.0.0.1 with the plugin's
token, and every failure reported as one clear line. The model API shapes and streaming in detail:
tests/test_chat_model_apis.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from supervisor import paths
from supervisor.credentials import save_credentials
from supervisor.registry import Registry
from model_server import ModelServer
from wasm_fixtures import make_guest

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- plugins


@pytest.fixture(scope="module")
def built_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ copied and built with examples/build.py (the wasm files are not in git)."""
    copy = tmp_path_factory.mktemp("chat-examples") / "examples"
    shutil.copytree(REPO / "examples", copy, ignore=shutil.ignore_patterns("*.wasm", "__pycache__"))
    spec = importlib.util.spec_from_file_location("examples_build", REPO / "examples" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_examples(copy)
    return copy


def add(cli, directory: Path) -> None:
    result = cli("plugin", "add", "--yes", str(directory))
    assert result.exit_code == 0, result.output


@pytest.fixture
def echo_provider(cli, built_examples: Path) -> str:
    add(cli, built_examples / "echo-provider")
    return "echo-provider"


def hello_auth(cli, built_examples: Path, tmp_path: Path, *, http: list[str]) -> str:
    """examples/hello-auth installed with these capabilities.http entries (what a user would declare)."""
    source = tmp_path / "hello-auth"
    shutil.copytree(built_examples / "hello-auth", source)
    manifest = source / "plugin.toml"
    text = manifest.read_text()
    assert 'http = ["api.example.com"]' in text
    manifest.write_text(text.replace('http = ["api.example.com"]', f"http = {json.dumps(http)}"))
    add(cli, source)
    return "hello-auth"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with ModelServer() as running:
        monkeypatch.setenv("HELLO_TOKEN", "tok-123")
        monkeypatch.setenv("HELLO_ENDPOINT", f"{running.url}/v1/chat/completions")
        yield running


def data(offset: int, text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'  (data (i32.const {offset}) "{escaped}")\n'


INFO = '{"id":"probe","display_name":"Probe"}'


def provider_exports(models: str = "[]") -> str:
    """provider_info and provider_models returning fixed JSON (data at 100 and 200)."""
    return (data(100, INFO) + data(200, models) + f"""
  (func (export "provider_info") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 100) (i32.const {len(INFO)})) (i32.const {len(INFO)}))
  (func (export "provider_models") (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 200) (i32.const {len(models)})) (i32.const {len(models)}))
""")


def returning(export: str, params: str, text: str, *, negate: bool = False) -> str:
    """An export that writes `text` (at 1024) to its result buffer and returns its length (negated if asked)."""
    size = len(text.encode())
    return data(1024, text) + f"""
  (func (export "{export}") {params} (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 1024) (i32.const {size})) (i32.const {-size if negate else size}))
"""


CHAT_PARAMS = "(param i32 i32 i32 i32)"

# provider_chat answers "model=<model> bytes=<length of the messages JSON> creds=<what provider_auth_init got in
# this instance>", so a test sees the model, the whole conversation sent and the credentials fed.
PROBE = provider_exports('[{"id":"probe-large"},{"id":"probe-small"}]') + data(300, '{"text":"model=') + \
    data(320, " bytes=") + data(336, " creds=") + data(352, '"}') + r"""
  (global $creds_len (mut i32) (i32.const 0))
  (func $emit (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))
  (func $itoa (param $n i32) (param $dst i32) (result i32)
    (local $tmp i32)
    (local.set $tmp (i32.const 4096))
    (loop $digit
      (local.set $tmp (i32.sub (local.get $tmp) (i32.const 1)))
      (i32.store8 (local.get $tmp) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (call $emit (local.get $dst) (local.get $tmp) (i32.sub (i32.const 4096) (local.get $tmp))))
  ;; copy src as the inside of a JSON string: quotes and backslashes get a backslash
  (func $escape (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (local $i i32) (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (if (i32.or (i32.eq (local.get $c) (i32.const 34)) (i32.eq (local.get $c) (i32.const 92)))
          (then (i32.store8 (local.get $dst) (i32.const 92))
                (local.set $dst (i32.add (local.get $dst) (i32.const 1)))))
        (i32.store8 (local.get $dst) (local.get $c))
        (local.set $dst (i32.add (local.get $dst) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $dst))
  (func (export "provider_auth_init") (param $p i32) (param $n i32) (result i32)
    (if (i32.gt_u (local.get $n) (i32.const 16000)) (then (return (i32.const -1))))
    (memory.copy (i32.const 16384) (local.get $p) (local.get $n))
    (global.set $creds_len (local.get $n))
    (i32.const 0))
  (func (export "provider_chat") (param $m i32) (param $ml i32) (param $model i32) (param $model_len i32)
                                 (param $ret i32) (result i32)
    (local $out i32)
    (local.set $out (call $emit (local.get $ret) (i32.const 300) (i32.const 15)))
    (local.set $out (call $escape (local.get $out) (local.get $model) (local.get $model_len)))
    (local.set $out (call $emit (local.get $out) (i32.const 320) (i32.const 7)))
    (local.set $out (call $itoa (local.get $ml) (local.get $out)))
    (local.set $out (call $emit (local.get $out) (i32.const 336) (i32.const 7)))
    (local.set $out (call $escape (local.get $out) (i32.const 16384) (global.get $creds_len)))
    (local.set $out (call $emit (local.get $out) (i32.const 352) (i32.const 2)))
    (i32.sub (local.get $out) (local.get $ret)))
"""


def install_guest(cli, tmp_path: Path, name: str, body: str, capabilities: str = "") -> str:
    make_guest(tmp_path / name, body, name=name, capabilities=capabilities)
    add(cli, tmp_path / name)
    return name


def messages_bytes(*messages: tuple[str, str]) -> int:
    """The size of the messages JSON the supervisor sends to provider_chat."""
    return len(json.dumps([{"role": r, "content": c} for r, c in messages], ensure_ascii=False,
                          separators=(",", ":")).encode())


def chat_json(cli, *args: str) -> dict:
    result = cli("chat", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def repl(tark_argv: list[str], *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """The real `tark chat` in a subprocess, without MESSAGE: the REPL reading `stdin`."""
    return subprocess.run([*tark_argv, "chat", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ), cwd=REPO, check=False)


# --------------------------------------------------------------------------- adapter mode


def test_one_shot_prints_the_reply_of_the_plugins_provider_chat(echo_provider, run_tark):
    done = run_tark("chat", "--provider", "echo-provider", "hello there")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello there\n"


def test_json_reply_comes_from_the_plugins_own_worker(echo_provider, cli):
    reply = chat_json(cli, "--provider", "echo-provider", "hi")
    assert reply == {"provider": "echo-provider", "model": "echo-1", "text": "hi",
                     "usage": {"input_tokens": reply["usage"]["input_tokens"], "output_tokens": 1},
                     "finish_reason": "stop", "mode": "adapter", "worker_pid": reply["worker_pid"]}
    assert isinstance(reply["worker_pid"], int) and reply["worker_pid"] != os.getpid()


def test_a_contributed_provider_id_selects_its_plugin(echo_provider, cli):
    assert chat_json(cli, "--provider", "echo", "via the contributed id")["provider"] == "echo-provider"


def test_default_model_is_the_first_listed_and_model_option_reaches_the_plugin(cli, tmp_path):
    install_guest(cli, tmp_path, "probe", PROBE)
    sent = messages_bytes(("user", "hi"))
    assert chat_json(cli, "--provider", "probe", "hi")["text"] == f"model=probe-large bytes={sent} creds="
    reply = chat_json(cli, "--provider", "probe", "--model", "probe-small", "hi")
    assert (reply["model"], reply["text"]) == ("probe-small", f"model=probe-small bytes={sent} creds=")


def test_plugin_without_models_gets_model_default(cli, tmp_path):
    install_guest(cli, tmp_path, "plain", provider_exports("[]") + returning("provider_chat", CHAT_PARAMS,
                                                                           '{"text":"ok"}'))
    reply = chat_json(cli, "--provider", "plain", "hi")
    assert (reply["model"], reply["text"], reply["usage"], reply["finish_reason"]) == ("default", "ok", None, None)


def test_system_prompt_goes_first(cli, tmp_path):
    install_guest(cli, tmp_path, "probe", PROBE)
    reply = chat_json(cli, "--provider", "probe", "--system", "be brief", "hi")
    assert reply["text"].split()[1] == f"bytes={messages_bytes(('system', 'be brief'), ('user', 'hi'))}"


def test_repl_keeps_the_history_and_reset_clears_it(cli, tmp_path):
    install_guest(cli, tmp_path, "probe", PROBE)
    done = cli("chat", "--provider", "probe", input="first\n\nsecond\n/reset\nthird\n/exit\nnever sent\n")
    assert done.exit_code == 0, done.output
    first = messages_bytes(("user", "first"))
    second = messages_bytes(("user", "first"), ("assistant", f"model=probe-large bytes={first} creds="),
                            ("user", "second"))
    assert done.stdout.split("\n") == [
        f"> model=probe-large bytes={first} creds=",
        f"> > model=probe-large bytes={second} creds=",  # the blank line is skipped
        "> Conversation cleared.",
        f"> model=probe-large bytes={messages_bytes(('user', 'third'))} creds=",
        "> ",  # /exit: nothing after it is read
    ]
    assert "Chatting with probe (model probe-large, adapter mode)" in done.stderr


def test_echo_provider_repl_in_a_subprocess_sends_the_history(echo_provider, tark_argv):
    done = repl(tark_argv, "--provider", "echo", "--json", stdin="one\ntwo\n")
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line.removeprefix("> ")) for line in done.stdout.splitlines()[:2])
    assert (first["text"], second["text"]) == ("one", "two")
    # echo-provider counts input tokens as (bytes of the messages JSON) / 4 + 1
    history = [("user", "one"), ("assistant", "one"), ("user", "two")]
    assert first["usage"]["input_tokens"] == messages_bytes(history[0]) // 4 + 1
    assert second["usage"]["input_tokens"] == messages_bytes(*history) // 4 + 1
    assert first["worker_pid"] == second["worker_pid"] != os.getpid()


def test_repl_ends_at_end_of_input_and_with_quit(echo_provider, cli):
    done = cli("chat", "--provider", "echo-provider", input="one\ntwo")
    assert done.exit_code == 0 and done.stdout == "> one\n> two\n> \n"
    assert cli("chat", "--provider", "echo", input="/quit\nthree\n").stdout == "> "


def test_a_failed_turn_is_reported_and_the_repl_goes_on(cli, tmp_path):
    # the plugin traps on a conversation of more than one message: the first turn works, the second fails
    body = provider_exports() + data(1024, '{"text":"fine"}') + f"""
  (func (export "provider_chat") {CHAT_PARAMS} (param $ret i32) (result i32)
    (if (i32.gt_u (local.get 1) (i32.const {messages_bytes(('user', 'a'))})) (then unreachable))
    (memory.copy (local.get $ret) (i32.const 1024) (i32.const 15)) (i32.const 15))
"""
    install_guest(cli, tmp_path, "fragile", body)
    done = cli("chat", "--provider", "fragile", input="a\nb\n/reset\nc\n")
    assert done.exit_code == 0
    assert done.stdout == "> fine\n> > Conversation cleared.\n> fine\n> \n"
    assert "Error: Plugin 'fragile' crashed during 'provider_chat'" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- credentials and provider_auth_init


def test_stored_credentials_go_to_provider_auth_init_in_the_instance_of_every_turn(cli, tmp_path):
    install_guest(cli, tmp_path, "probe", PROBE)
    credentials = '{"access_token":"secret \\"quoted\\"","refresh_token":"r-1"}'
    save_credentials(Registry(paths.plugins_dir()).get("probe"), credentials)
    done = cli("chat", "--provider", "probe", input="one\ntwo\n")
    assert done.exit_code == 0, done.output
    replies = [line.removeprefix("> ") for line in done.stdout.splitlines()[:2]]
    assert all(reply.endswith(f" creds={credentials}") for reply in replies), replies


def test_credentials_the_plugin_rejects_are_a_clear_error(cli, tmp_path):
    install_guest(cli, tmp_path, "picky", provider_exports() + returning("provider_chat", CHAT_PARAMS, '{"text":"x"}')
                  + """
  (func (export "provider_auth_init") (param i32 i32) (result i32) (i32.const -3))
""")
    save_credentials(Registry(paths.plugins_dir()).get("picky"), "{}")
    result = cli("chat", "--provider", "picky", "hi")
    assert result.exit_code == 1
    assert ("Error: Plugin 'picky' rejected the stored credentials: Function provider_auth_init failed with error "
            "code: -3. Sign in again with: tark auth picky") in result.output


# --------------------------------------------------------------------------- adapter failures


@pytest.mark.parametrize(
    ("chat_export", "message"),
    [
        (returning("provider_chat", CHAT_PARAMS, '{"error":"quota exhausted"}', negate=True),
         "Provider chat failed with error code: -27 (plugin says: quota exhausted)"),
        (f'(func (export "provider_chat") {CHAT_PARAMS} (param i32) (result i32) (i32.const -3))',
         "Provider chat failed with error code: -3"),
        (f'(func (export "provider_chat") {CHAT_PARAMS} (param i32) (result i32) unreachable)',
         "Plugin 'broken' crashed during 'provider_chat': "),
        (returning("provider_chat", CHAT_PARAMS, '{"text":"  "}'),
         "Plugin provider 'broken' returned an empty response for model 'default'. Check plugin auth status and "
         "allowed HTTP domains."),
        (returning("provider_chat", CHAT_PARAMS, "not json"), "Failed to parse chat response JSON: "),
        (returning("provider_chat", CHAT_PARAMS, '{"usage":{"input_tokens":1,"output_tokens":1}}'),
         "Failed to parse chat response JSON: 'text' must be a string"),
        (returning("provider_chat", CHAT_PARAMS, '{"text":"x","usage":{"input_tokens":1}}'),
         "Failed to parse chat response JSON: 'usage' needs 'input_tokens' and 'output_tokens'"),
        ('(data (i32.const 1024) "\\ff\\fe")' + f"""(func (export "provider_chat") {CHAT_PARAMS} (param $ret i32) (result i32)
            (memory.copy (local.get $ret) (i32.const 1024) (i32.const 2)) (i32.const 2))""",
         "Invalid UTF-8 in result"),
    ],
    ids=["negative-with-diagnostics", "negative", "trap", "blank-text", "bad-json", "no-text", "half-usage",
         "bad-utf8"],
)
def test_adapter_failures_are_one_clear_error(cli, tmp_path, chat_export, message):
    install_guest(cli, tmp_path, "broken", provider_exports() + chat_export)
    result = cli("chat", "--provider", "broken", "hi")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_bad_provider_info_or_models_is_reported_at_start(cli, tmp_path):
    install_guest(cli, tmp_path, "badinfo", returning("provider_info", "", '{"id":"x"}') + """
  (func (export "provider_models") (param i32) (result i32) (i32.const 0))
  (func (export "provider_chat") (param i32 i32 i32 i32 i32) (result i32) (i32.const 0))
""")
    result = cli("chat", "--provider", "badinfo", "hi")
    assert result.exit_code == 1 and "Failed to parse provider info JSON: 'display_name' must be a string" in result.output


def test_a_provider_without_chat_exports_names_what_is_missing(cli, tmp_path):
    install_guest(cli, tmp_path, "infoonly", provider_exports())
    result = cli("chat", "--provider", "infoonly", "hi")
    assert result.exit_code == 1
    assert "Plugin 'infoonly' cannot chat" in result.output and "provider_chat" in result.output


# --------------------------------------------------------------------------- selection


def test_unknown_provider_without_any_installed_says_how_to_add_one(cli):
    result = cli("chat", "--provider", "echo", "hi")
    assert result.exit_code == 1
    assert result.output == ("Error: Unknown LLM provider: echo. Supported: (no built-in providers)\n"
                             "Plugin providers: none installed (add one with: tark plugin add <source>)\n")


def test_unknown_provider_lists_the_enabled_plugin_providers(echo_provider, cli, tmp_path):
    install_guest(cli, tmp_path, "probe", PROBE)
    install_guest(cli, tmp_path, "off", PROBE)
    assert cli("plugin", "disable", "off").exit_code == 0
    make_guest(tmp_path / "a-tool", "", name="a-tool", type="tool")
    add(cli, tmp_path / "a-tool")
    result = cli("chat", "--provider", "gpt", "hi")
    assert result.exit_code == 1
    assert result.output == ("Error: Unknown LLM provider: gpt. Supported: (no built-in providers)\n"
                             "Plugin providers: echo-provider, probe\n")


def test_missing_provider_option_is_a_usage_error_listing_providers(echo_provider, cli):
    result = cli("chat", "hi")
    assert result.exit_code == 2
    assert "Missing option '--provider'" in result.output and "Plugin providers: echo-provider" in result.output


def test_disabled_and_non_provider_plugins_are_refused(echo_provider, cli, tmp_path):
    assert cli("plugin", "disable", "echo-provider").exit_code == 0
    for name in ("echo-provider", "echo"):
        result = cli("chat", "--provider", name, "hi")
        assert result.exit_code == 1
        assert "Provider plugin 'echo-provider'" in result.output and "is disabled; enable it with: tark plugin " \
            "enable echo-provider" in result.output
    make_guest(tmp_path / "a-tool", "", name="a-tool", type="tool")
    add(cli, tmp_path / "a-tool")
    result = cli("chat", "--provider", "a-tool", "hi")
    assert result.exit_code == 1 and "Plugin 'a-tool' is a tool plugin, not a provider" in result.output


# --------------------------------------------------------------------------- auth-only mode


def test_auth_only_provider_talks_to_the_model_api_with_the_plugins_token(cli, built_examples, tmp_path, server):
    hello_auth(cli, built_examples, tmp_path, http=["api.example.com", f"http://127.0.0.1:{server.port}"])
    reply = chat_json(cli, "--provider", "hello", "--no-stream", "hi")
    assert reply == {"provider": "hello-auth", "model": "gpt-4", "text": "gpt-4 heard: hi",
                     "usage": {"input_tokens": 1, "output_tokens": 3}, "finish_reason": "stop",
                     "mode": "openai_compat", "worker_pid": reply["worker_pid"]}
    assert isinstance(reply["worker_pid"], int) and reply["worker_pid"] != os.getpid()
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["x-hello"] == "1"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096}


def test_auth_only_repl_sends_the_whole_conversation_and_the_chosen_model(cli, built_examples, tmp_path, server):
    hello_auth(cli, built_examples, tmp_path, http=[f"http://127.0.0.1:{server.port}"])
    done = cli("chat", "--provider", "hello-auth", "--model", "m-2", "--system", "sys", input="one\ntwo\n")
    assert done.exit_code == 0, done.output
    assert done.stdout == "> m-2 heard: one\n> m-2 heard: two\n> \n"
    assert [r.body["messages"] for r in server.requests] == [
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "one"}],
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "one"},
         {"role": "assistant", "content": "m-2 heard: one"}, {"role": "user", "content": "two"}],
    ]
    assert {r.body["model"] for r in server.requests} == {"m-2"}


def test_endpoint_outside_the_plugins_http_capability_is_refused(cli, built_examples, tmp_path, server):
    hello_auth(cli, built_examples, tmp_path, http=["api.example.com"])
    result = cli("chat", "--provider", "hello-auth", "hi")
    assert result.exit_code == 1
    assert (f"Plugin 'hello-auth' asks tark to send the conversation and its token to {server.url}"
            "/v1/chat/completions, which its http grants do not allow") in result.output
    assert server.requests == []


def test_names_resolving_to_internal_addresses_are_refused(cli, built_examples, tmp_path, server, monkeypatch):
    alias = socket.gethostname().lower()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(alias, 80)}
    except OSError:
        pytest.skip("the host name does not resolve")
    if alias == "localhost" or not any(a.startswith("127.") or a == "::1" for a in addresses):
        pytest.skip("the host name does not resolve to a loopback address here")
    monkeypatch.setenv("HELLO_ENDPOINT", f"http://{alias}:{server.port}/v1/chat/completions")
    hello_auth(cli, built_examples, tmp_path, http=[f"http://{alias}:{server.port}"])
    result = cli("chat", "--provider", "hello-auth", "hi")
    assert result.exit_code == 1
    assert "loopback address" in result.output and "literally" in result.output
    assert server.requests == []


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("error", 'Service error: {"error":{"message":"the model is on fire"}}'),
        ("unauthorized", 'Unauthorized: {"error":{"message":"token expired"}}'),
        ("bad_json", "Failed to parse openai-compat API response: "),
        ("empty", "The model API returned an empty response for model 'gpt-4'"),
    ],
)
def test_model_api_failures_are_one_clear_error(cli, built_examples, tmp_path, server, behaviour, message):
    hello_auth(cli, built_examples, tmp_path, http=[f"http://127.0.0.1:{server.port}"])
    server.behaviour = behaviour
    result = cli("chat", "--provider", "hello-auth", "--no-stream", "hi")
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output and "Traceback" not in result.output
    assert "tok-123" not in result.output


def test_the_endpoint_is_used_exactly_as_the_plugin_gives_it(cli, built_examples, tmp_path, server, monkeypatch):
    # tark appends nothing: an endpoint without /chat/completions is posted to as it is (here: the server's 404)
    monkeypatch.setenv("HELLO_ENDPOINT", f"{server.url}/v1")
    hello_auth(cli, built_examples, tmp_path, http=[f"http://127.0.0.1:{server.port}"])
    result = cli("chat", "--provider", "hello-auth", "hi")
    assert result.exit_code == 1
    assert 'Error: HTTP 404 Not Found: {"error":{"message":"no such path"}}' in result.output
    assert [r.path for r in server.requests] == ["/v1"]


def test_auth_only_plugin_that_cannot_give_credentials(cli, built_examples, tmp_path, monkeypatch):
    monkeypatch.delenv("HELLO_TOKEN", raising=False)
    hello_auth(cli, built_examples, tmp_path, http=["api.example.com"])
    result = cli("chat", "--provider", "hello-auth", "hi")
    assert result.exit_code == 1
    assert ("Function provider_auth_credentials returned error code: -76 (plugin says: not authenticated: call "
            "init_with_credentials or set HELLO_TOKEN)") in result.output


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ('{"access_token":"t"}',
         "Plugin provider 'creds' uses api_mode 'cloud_code_assist' but its credentials have no 'project_id'"),
        ('{"access_token":"t","api_mode":"bedrock","endpoint":"https://a.example"}',
         "Unsupported api_mode 'bedrock' from plugin provider 'creds'"),
        ('{"access_token":"t","api_mode":"openai_compat"}', "uses api_mode 'openai_compat' but its credentials have "
                                                             "no 'endpoint'"),
        ('{"api_mode":"openai_compat","endpoint":"https://a.example"}',
         "Failed to parse auth credentials JSON: 'access_token' must be a non-empty string"),
        ("[1]", "Failed to parse auth credentials JSON: expected an object, got an array"),
        ('{"access_token":"t","api_mode":"openai_compat","endpoint":"ftp://a.example"}', "is not an http(s) URL"),
        ('{"access_token":"t\\nX-Evil: 1","api_mode":"openai_compat","endpoint":"https://a.example"}',
         "Plugin 'creds' gave credentials that cannot be sent: invalid value for header 'Authorization'"),
    ],
    ids=["cloud-code-assist", "other-mode", "no-endpoint", "no-token", "not-object", "not-http", "header-injection"],
)
def test_unusable_auth_credentials_are_refused(cli, tmp_path, credentials, message):
    install_guest(cli, tmp_path, "creds", returning("provider_auth_credentials", "", credentials),
                  capabilities='http = ["a.example"]')
    result = cli("chat", "--provider", "creds", "hi")
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_auth_only_failure_falls_back_to_the_plugins_own_chat_with_a_warning(cli, tmp_path):
    body = provider_exports() + returning("provider_auth_credentials", "", '{"access_token":"t"}').replace(
        "1024", "3000") + data(1024, '{"text":"adapter answer"}') + f"""
  (func (export "provider_chat") {CHAT_PARAMS} (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 1024) (i32.const 25)) (i32.const 25))
"""
    install_guest(cli, tmp_path, "both", body)
    result = cli("chat", "--provider", "both", "hi")
    assert result.exit_code == 0, result.output
    assert result.stdout == "adapter answer\n"
    assert "Warning: Plugin provider 'both' uses api_mode 'cloud_code_assist' but its credentials have no " \
        "'project_id'" in result.stderr
    assert "Falling back to the plugin's own provider_chat (adapter mode)." in result.stderr



def test_chat_through_the_daemon_runs_in_a_worker_of_the_daemon(cli, tmp_path, run_tark):
    install_guest(cli, tmp_path, "probe", PROBE)
    save_credentials(Registry(paths.plugins_dir()).get("probe"), '{"t":1}')
    started = run_tark("supervisor", "start")
    assert started.returncode == 0, started.stderr
    try:
        reply = chat_json(cli, "--provider", "probe", "hi")
        assert reply["text"] == f"model=probe-large bytes={messages_bytes(('user', 'hi'))} creds={{\"t\":1}}"
        state = json.loads(run_tark("supervisor", "status", "--json").stdout)
        assert state["running"] is True
        assert reply["worker_pid"] in {p.pid for p in psutil.Process(state["pid"]).children(recursive=True)}
    finally:
        assert run_tark("supervisor", "stop").returncode == 0
