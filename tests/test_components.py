"""Component plugins (wit/tark.wit) hosted next to core modules: the same scenario for a core-ABI plugin and its
component twin, through real workers, the real broker and real capability handlers (docs/components.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from policy import abi
from policy.limits import LIVE_STORES
from supervisor.capabilities.audit import read_audit
from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin, load_plugin_dir
from supervisor.wasm_check import WasmValidationError, validate_wasm
from supervisor.workers import WorkerPool
from wasm_fixtures import RecordingHost
from worker import protocol
from component_fixtures import build_examples

CAP_INFO, CAP_CHAT = 8192, 65536
PROVIDERS = ["echo-provider", "echo-wit"]


@pytest.fixture
def examples(tmp_path: Path) -> dict[str, InstalledPlugin]:
    return {d.name: load_plugin_dir(d) for d in build_examples(tmp_path / "examples")}


@pytest.fixture
def pool_and_hosts(tmp_path: Path):
    hosts: list[RecordingHost] = []
    environ = {"ECHO_PREFIX": "echo: ", "UNRELATED_SECRET": "x"}

    def factory(plugin: InstalledPlugin) -> RecordingHost:
        hosts.append(RecordingHost(plugin, environ=environ, home=str(tmp_path), audit_path=tmp_path / "audit.log"))
        return hosts[-1]

    runtime = Path(tempfile.mkdtemp(prefix="tc-"))  # short: the worker endpoints are unix socket paths
    cache = ModuleCache(tmp_path / "cache")
    try:
        with WorkerPool(runtime, cache, factory) as pool:
            yield pool, hosts, cache
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def ok_json(outcome):
    assert outcome.ok, outcome.error_message
    assert outcome.ret == len(outcome.output)
    return json.loads(outcome.output)


def test_the_kind_is_read_from_the_preamble(examples) -> None:
    assert abi.wasm_kind(examples["echo-provider"].wasm_path.read_bytes()) == abi.CORE_MODULE
    assert abi.wasm_kind(examples["echo-wit"].wasm_path.read_bytes()) == abi.COMPONENT
    assert abi.wasm_kind(b"\x7fELF\x02\x01\x01\x00") is None


def test_installing_a_component_validates_it_without_compiling_it(examples) -> None:
    # Compiling a Python plugin's 18 MB component takes 17-80 s here; the first call compiles it into the module
    # cache anyway, so `plugin add` only validates it (wasm-tools) and never loads the compiler (wasmtime).
    script = ("import sys; from pathlib import Path; from supervisor.wasm_check import validate_wasm;"
              "validate_wasm(Path(sys.argv[1]).read_bytes()); print(sorted(m for m in sys.modules if 'wasmtime' in m))")
    done = subprocess.run([sys.executable, "-c", script, str(examples["echo-wit"].wasm_path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_broken_component_is_refused_at_install_with_the_validators_reason(examples) -> None:
    whole = examples["echo-wit"].wasm_path.read_bytes()
    with pytest.raises(WasmValidationError, match=r"^WASM validation failed: unexpected end-of-file"):
        validate_wasm(whole[: len(whole) // 2])


def test_one_table_gives_the_signature_of_every_export_in_both_abis() -> None:
    for export, (params, results) in abi.CORE_SIGNATURES.items():
        shape = abi.export_shape(export, params, results)  # what `plugin call` derives from a module's signature
        assert shape.string_args == abi.STRING_ARGS[export]
        assert (shape.result_capacity is None) == (export in abi.STATUS_ONLY)
    for entry in abi.EXPORTS:
        assert abi.resolve_export(entry.core) is abi.resolve_export(entry.wit_name) is entry
        assert abi.resolve_export(f"{abi.interface_name(entry.interface)}#{entry.function}") is entry
    assert abi.resolve_export("tool-plugin#nope") is None and abi.resolve_export("tark:other/tool-plugin@0.1.0#execute") is None


def test_a_component_has_the_core_exports_of_its_wit_functions(examples, pool_and_hosts) -> None:
    _, _, cache = pool_and_hosts
    core = cache.exports(examples["echo-provider"].wasm_path)
    component = cache.exports(examples["echo-wit"].wasm_path)
    assert set(component) == {"provider_info", "provider_models", "provider_chat"}
    for name, signature in component.items():
        assert tuple(signature) == tuple(core[name])


@pytest.mark.parametrize("name", PROVIDERS)
def test_provider_chat_echoes_the_last_user_message(name, examples, pool_and_hosts) -> None:
    pool, hosts, _ = pool_and_hosts
    plugin = examples[name]
    assert ok_json(pool.call(plugin, "provider_info", [], CAP_INFO))["id"] == "echo"
    [model] = ok_json(pool.call(plugin, "provider_models", [], CAP_INFO))
    assert model["id"] == "echo-1"
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "say \"hi\" ✓"},
    ]
    for expected_count in (1, 2):
        reply = ok_json(pool.call(plugin, "provider_chat", [json.dumps(messages).encode(), b"echo-1"], CAP_CHAT))
        assert reply["text"] == 'echo: say "hi" ✓'  # env capability: ECHO_PREFIX is granted
        assert reply["finish_reason"] == "stop" and reply["usage"]["output_tokens"] > 0
        logs = [m.message for m in hosts[-1].logged if isinstance(m, protocol.Log)]
        assert logs[-1] == f"echo-provider: answering chat #{expected_count}"  # storage kept the count


@pytest.mark.parametrize("name", PROVIDERS)
def test_provider_errors_reach_the_host_gemini_style(name, examples, pool_and_hosts) -> None:
    pool, _, _ = pool_and_hosts
    outcome = pool.call(examples[name], "provider_chat", [b'[{"role":"system","content":"x"}]', b"m"], CAP_CHAT)
    assert outcome.ret == -len(outcome.output)
    assert json.loads(outcome.output) == {"error": "no user message in the conversation"}


@pytest.mark.parametrize("name", ["echo-channel", "chan-wit"])
def test_channel_queues_webhooks_for_the_poll_loop(name, examples, pool_and_hosts) -> None:
    pool, hosts, _ = pool_and_hosts
    plugin = examples[name]
    info = ok_json(pool.call(plugin, "channel_info", [], CAP_INFO))
    assert (info["id"], info["display_name"], info["supports_edits"]) == ("echo", "Echo channel", False)
    assert pool.call(plugin, "channel_start", [], None, instance="poll").ret == 0
    assert [m.message for m in hosts[-1].logged if isinstance(m, protocol.Log)] == ["echo-channel: started"]
    assert ok_json(pool.call(plugin, "channel_poll", [], CAP_INFO, instance="poll")) == []
    request = {"method": "POST", "path": f"/channels/{name}/webhook", "query": None,
               "headers": [["content-type", "application/json"]], "body": '{"text": "ping"}'}
    response = ok_json(pool.call(plugin, "channel_handle_webhook", [json.dumps(request).encode()], CAP_CHAT))
    assert response["status"] == 200 and json.loads(response["body"]) == {"queued": True}
    [inbound] = ok_json(pool.call(plugin, "channel_poll", [], CAP_INFO, instance="poll"))
    assert inbound == {"conversation_id": "webhook", "user_id": "webhook", "text": '{"text": "ping"}',
                       "metadata_json": ""}
    assert ok_json(pool.call(plugin, "channel_poll", [], CAP_INFO, instance="poll")) == []
    send = json.dumps({"conversation_id": "webhook", "text": "pong", "message_id": None, "is_final": True,
                       "metadata_json": ""}).encode()
    ids = [ok_json(pool.call(plugin, "channel_send", [send], CAP_CHAT, instance="poll"))["message_id"] for _ in range(2)]
    assert ids == ["1", "2"]  # the long-lived instance keeps its state
    assert ok_json(pool.call(plugin, "channel_send", [send], CAP_CHAT))["message_id"] == "1"  # a fresh one does not


class _RequestRecorder(RecordingHost):
    """The real PluginHost, also remembering each host request (without its per-call id)."""

    def __init__(self, plugin: InstalledPlugin, **kwargs: object) -> None:
        super().__init__(plugin, **kwargs)
        self.requests: list[tuple] = []

    def handle(self, request: protocol.HostRequest) -> protocol.HostReply:
        fields = {f: getattr(request, f) for f in request.__struct_fields__ if f != "host_call_id"}
        self.requests.append((type(request).__name__, fields))
        return super().handle(request)


@pytest.mark.parametrize("name", ["echo-channel", "chan-wit"])
def test_long_lived_instances_are_capped_below_what_the_address_space_holds(name, examples, pool_and_hosts) -> None:
    # Each store reserves the memory cap; RLIMIT_AS holds LIVE_STORES of them. One more named instance is refused
    # by name (not by a failed mmap), and a fresh call still finds room while the named ones live.
    pool, _, _ = pool_and_hosts
    plugin = examples[name]
    for index in range(LIVE_STORES - 1):
        assert pool.call(plugin, "channel_start", [], None, instance=f"loop-{index}").ret == 0
    outcome = pool.call(plugin, "channel_start", [], None, instance="one-too-many")
    assert outcome.error_kind == "instantiate"
    assert outcome.error_message == f"too many live instances (at most {LIVE_STORES - 1})"
    assert ok_json(pool.call(plugin, "channel_info", [], CAP_INFO))["id"] == "echo"  # a fresh instance
    pool.end_instance(plugin.name, "loop-0")
    assert pool.call(plugin, "channel_start", [], None, instance="one-too-many").ret == 0


def test_the_supervisor_sees_the_same_requests_whichever_abi_asked(examples, tmp_path: Path) -> None:
    hosts: dict[str, _RequestRecorder] = {}

    def factory(plugin: InstalledPlugin) -> _RequestRecorder:
        hosts[plugin.name] = _RequestRecorder(plugin, environ={"ECHO_PREFIX": "> "}, home=str(tmp_path),
                                              audit_path=tmp_path / f"audit-{plugin.name}.log")
        return hosts[plugin.name]

    runtime = Path(tempfile.mkdtemp(prefix="tr-"))
    try:
        with WorkerPool(runtime, ModuleCache(tmp_path / "cache"), factory) as pool:
            for name in PROVIDERS:
                ok_json(pool.call(examples[name], "provider_chat", [b'[{"role":"user","content":"hi"}]', b"m"],
                                  CAP_CHAT))
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    core, component = (hosts[name].requests for name in PROVIDERS)
    assert core == component == [
        ("StorageGet", {"key": "chat_count"}),
        ("StorageSet", {"key": "chat_count", "value": "1"}),
        ("EnvGet", {"name": "ECHO_PREFIX"}),
    ]
    audits = [[(r["capability"], r["target"], r["decision"]) for r in read_audit(tmp_path / f"audit-{name}.log")]
              for name in PROVIDERS]
    assert audits[0] == audits[1] and audits[0]


# --------------------------------------------------------------------------- every command, either ABI

TOOLS = ["word-tools", "words-wit"]


@pytest.fixture
def installed(cli, tmp_path: Path):
    """`installed(name, ...)`: copies of the examples, built and added with `tark plugin add --yes`."""
    def install(*names: str) -> None:
        from test_tools import install_examples
        install_examples(cli, tmp_path, *names)
    return install


@pytest.mark.parametrize("name", PROVIDERS)
def test_tark_chat_answers_through_either_abi(name, installed, run_tark, cli):
    installed(name)
    done = run_tark("chat", "--provider", name, "hello there")
    assert (done.returncode, done.stdout) == (0, "hello there\n"), done.stderr
    reply = json.loads(cli("chat", "--json", "--provider", name, "hi").stdout)
    assert (reply["text"], reply["model"], reply["mode"]) == ("hi", "echo-1", "adapter")


@pytest.mark.parametrize("name", TOOLS)
def test_tark_tool_run_works_the_same_for_either_abi(name, installed, run_tark, cli):
    installed(name)
    done = run_tark("tool", "run", name, "word_count", "--args", '{"text": "the quick  brown fox"}')
    assert (done.returncode, done.stdout) == (0, "4\n"), done.stderr
    missing = cli("tool", "run", name, "read_note")
    assert missing.exit_code == 1
    assert f"Error: tool 'read_note' of plugin '{name}' failed: no note has been stored yet" in missing.stderr
    assert cli("tool", "run", name, "store_note", "--args", '{"note": "buy milk"}').stdout == "note saved\n"
    assert cli("tool", "run", name, "read_note").stdout == "buy milk\n"
    listed = {t["name"]: t["risk_level"] for t in json.loads(cli("tool", "list", "--json").stdout)}
    assert listed == {"word_count": "read-only", "store_note": "write", "read_note": "read-only"}


@pytest.mark.parametrize("name", TOOLS)
def test_plugin_call_takes_wit_names_for_either_abi(name, installed, run_tark):
    installed(name)
    for export in ("tool-plugin#execute", "tark:plugin/tool-plugin@0.1.0#execute", "tool_execute"):
        done = run_tark("plugin", "call", name, export, "word_count", '{"text":"a b"}')
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"success": True, "output": "2", "error": None}


HOOKS = ["audit-hook", "audit-wit"]


def stored_events(hook: str) -> list[str]:
    """The hook's "events" storage value, read from its SQLite store."""
    import logging
    from supervisor.capabilities.storage import DB_FILE, KeyValueStore
    from supervisor import paths
    from supervisor.registry import Registry
    store = KeyValueStore(Registry(paths.plugins_dir()).get(hook).data_dir / DB_FILE, 1.0, logging.getLogger("test"))
    try:
        return (store.get("events") or "").splitlines()
    finally:
        store.close()


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_hear_the_same_events_whichever_abi_tool_and_hook_use(tool, hook, installed, run_tark, cli):
    installed(tool, hook)
    done = run_tark("tool", "run", tool, "word_count", "--args", '{"text": "one two three"}')
    assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr
    failed = cli("tool", "run", tool, "read_note", "--json")
    assert failed.exit_code == 1
    assert [(h["plugin"], h["event"], h["ok"]) for h in json.loads(failed.stdout)["hooks"]] == [
        (hook, "on_tool_execute", True), (hook, "on_error", True)]
    assert stored_events(hook) == [
        'on_tool_execute word_count {"text":"one two three"}',
        'on_tool_complete word_count {"success":true,"output":"3","error":null}',
        "on_tool_execute read_note {}",
        f'on_error {{"plugin":"{tool}","tool":"read_note","error":"no note has been stored yet"}}',
    ]


def call_json(cli, *args: str) -> dict:
    done = cli("plugin", "call", *args, "--json")
    return json.loads(done.stdout)


def test_an_auth_component_signs_in_through_its_device_flow(installed, cli):
    installed("hello-wit")
    assert call_json(cli, "hello-wit", "auth-plugin#display-name")["output"] == "Hello Auth"
    assert call_json(cli, "hello-wit", "status")["ret"] == 0  # tark's legacy numbering: 0 not authenticated
    refused = call_json(cli, "hello-wit", "get_token")
    assert refused["ret"] < 0  # err(...) arrives as tark's gemini-style diagnostics
    assert json.loads(refused["output"]) == {"error": "not authenticated: run the device flow first"}
    flow = json.loads(call_json(cli, "hello-wit", "auth-plugin#start-device-flow")["output"])
    assert flow == {"device_code": "dev-1", "user_code": "ABCD-EFGH", "verification_uri": "https://example.com/device",
                    "expires_in": 600, "interval": 5}
    assert json.loads(call_json(cli, "hello-wit", "auth-plugin#poll", "dev-1")["output"]) == {"status": "pending"}
    assert json.loads(call_json(cli, "hello-wit", "auth-plugin#poll", "dev-1")["output"]) == {"status": "success"}
    assert call_json(cli, "hello-wit", "auth-plugin#status")["ret"] == 1
    assert call_json(cli, "hello-wit", "auth-plugin#get-token")["output"] == "hello-dev-1"
    assert call_json(cli, "hello-wit", "logout")["ret"] == 0
    assert call_json(cli, "hello-wit", "status")["ret"] == 0


# --------------------------------------------------------------------------- imports through the same handlers

FETCH = """(module
  (import "tark:plugin/http@0.1.0" "get" (func $http_get (param i32 i32 i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "set" (func $storage_set (param i32 i32 i32 i32 i32)))
  (import "tark:plugin/storage@0.1.0" "list-keys" (func $list_keys (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-probe")      ;; 7
  (data (i32.const 1040) "1")            ;; 1
  (data (i32.const 1056) "not-allowed")  ;; 11
  (data (i32.const 1072) "ba")
  (data (i32.const 3000) "\\00\\04\\00\\00\\07\\00\\00\\00\\10\\04\\00\\00\\01\\00\\00\\00")  ;; [("x-probe", "1")]
  (global $heap (mut i32) (i32.const 65536))
  (func (export "cabi_realloc") (param i32 i32 i32) (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))) (then (drop (memory.grow (i32.const 4)))))
    (local.get $p))
  ;; name(): stores keys "b" and "a"; models(): storage.list-keys()
  (func (export "tark:plugin/provider-plugin@0.1.0#name") (result i32)
    (call $storage_set (i32.const 1072) (i32.const 1) (i32.const 1040) (i32.const 1) (i32.const 2080))
    (call $storage_set (i32.const 1073) (i32.const 1) (i32.const 1040) (i32.const 1) (i32.const 2080))
    (i32.store (i32.const 2048) (i32.const 1072))
    (i32.store (i32.const 2052) (i32.const 2))
    (i32.const 2048))
  (func (export "tark:plugin/provider-plugin@0.1.0#models") (result i32)
    (call $list_keys (i32.const 2048))
    (i32.const 2048))
  ;; chat(_, url): http.get(url, [("x-probe", "1")]) -> content: the body, or "not-allowed", or the transport error;
  ;; usage-tokens: the status (0 for errors)
  (func (export "tark:plugin/provider-plugin@0.1.0#chat") (param i32 i32) (param $url i32) (param $len i32) (result i32)
    (call $http_get (local.get $url) (local.get $len) (i32.const 3000) (i32.const 1) (i32.const 2080))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2060) (i32.const 1024))
    (i32.store (i32.const 2064) (i32.const 0))
    (if (i32.eqz (i32.load8_u (i32.const 2080)))
      (then
        (i32.store (i32.const 2052) (i32.load (i32.const 2096)))
        (i32.store (i32.const 2056) (i32.load (i32.const 2100)))
        (i32.store (i32.const 2068) (i32.load16_u (i32.const 2084))))
      (else
        (i32.store (i32.const 2068) (i32.const 0))
        (if (i32.eqz (i32.load8_u (i32.const 2084)))
          (then (i32.store (i32.const 2052) (i32.const 1056)) (i32.store (i32.const 2056) (i32.const 11)))
          (else (i32.store (i32.const 2052) (i32.load (i32.const 2088)))
                (i32.store (i32.const 2056) (i32.load (i32.const 2092)))))))
    (i32.const 2048))
)"""


def test_http_and_storage_list_keys_reach_the_same_handlers(tmp_path: Path, pool_and_hosts) -> None:
    from cap_support import http_server, reply
    from component_fixtures import component_of
    from wasm_fixtures import make_guest

    pool, hosts, _ = pool_and_hosts

    def handler(req) -> None:
        reply(req, 201, f"hello {req.headers['x-probe']} at {req.path}".encode(), [("Connection", "close")])

    with http_server(handler) as port:
        plugin = make_guest(tmp_path / "fetch", wasm=component_of(FETCH, "provider-world"), name="fetch",
                            capabilities=f'storage = true\nhttp = ["http://127.0.0.1:{port}"]')
        fetched = ok_json(pool.call(plugin, "provider_chat", [b"[]", f"http://127.0.0.1:{port}/x".encode()], CAP_CHAT))
        assert (fetched["text"], fetched["usage"]["output_tokens"]) == ("hello 1 at /x", 201)
        denied = ok_json(pool.call(plugin, "provider_chat", [b"[]", b"http://example.invalid/"], CAP_CHAT))
        assert denied["text"] == "not-allowed"  # the allow-list said no: http-error::not-allowed
    gone = ok_json(pool.call(plugin, "provider_chat", [b"[]", f"http://127.0.0.1:{port}/x".encode()], CAP_CHAT))
    assert gone["usage"]["output_tokens"] == 0 and gone["text"] and gone["text"] != "not-allowed"  # transport(...)
    assert ok_json(pool.call(plugin, "provider_info", [], CAP_INFO))["id"] == "ba"
    assert ok_json(pool.call(plugin, "provider_models", [], CAP_INFO)) == [{"id": "a"}, {"id": "b"}]  # sorted keys
    [record] = read_audit(tmp_path / "audit.log", decision="denied")  # audited by the http handler itself
    assert (record["capability"], record["target"]) == ("http", "http://example.invalid/")
