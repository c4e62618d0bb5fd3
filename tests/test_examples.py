"""The example plugins, built from their WAT with examples/build.py and run in real workers with PluginHost."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from supervisor.modules import ModuleCache
from supervisor.plugin import InstalledPlugin, load_plugin_dir
from supervisor.workers import WorkerPool
from wasm_fixtures import RecordingHost
from worker import protocol

REPO = Path(__file__).resolve().parent.parent
CAP_INFO, CAP_CHAT = 8192, 65536


def _build_module():
    spec = importlib.util.spec_from_file_location("examples_build", REPO / "examples" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def examples(tmp_path: Path) -> dict[str, InstalledPlugin]:
    copy = tmp_path / "examples"
    shutil.copytree(REPO / "examples", copy, ignore=shutil.ignore_patterns("*.wasm", "__pycache__"))
    built = _build_module().build_examples(copy)
    assert {d.name for d in built} >= {"echo-provider", "echo-channel", "hello-auth"}
    return {d.name: load_plugin_dir(d) for d in built}


@pytest.fixture
def pool_and_hosts(tmp_path: Path):
    hosts: list[RecordingHost] = []
    environ = {"ECHO_PREFIX": "echo: ", "HELLO_TOKEN": "env-token", "UNRELATED_SECRET": "x"}

    def factory(plugin: InstalledPlugin) -> RecordingHost:
        hosts.append(RecordingHost(plugin, environ=environ, home=str(tmp_path)))
        return hosts[-1]

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    with WorkerPool(runtime, ModuleCache(tmp_path / "cache"), factory) as pool:
        yield pool, hosts


def ok_json(outcome):
    assert outcome.ok, outcome.error_message
    assert outcome.ret == len(outcome.output)
    return json.loads(outcome.output)


def test_echo_provider_info_and_models(examples, pool_and_hosts) -> None:
    pool, _ = pool_and_hosts
    plugin = examples["echo-provider"]
    info = ok_json(pool.call(plugin, "provider_info", [], CAP_INFO))
    assert (info["id"], info["display_name"]) == ("echo", "Echo")
    [model] = ok_json(pool.call(plugin, "provider_models", [], CAP_INFO))
    assert model["id"] == "echo-1"


def test_echo_provider_chat_echoes_the_last_user_message(examples, pool_and_hosts) -> None:
    pool, hosts = pool_and_hosts
    plugin = examples["echo-provider"]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "say \"hi\" ✓"},
    ]
    for expected_count in (1, 2):
        reply = ok_json(pool.call(plugin, "provider_chat", [json.dumps(messages).encode(), b"echo-1"], CAP_CHAT))
        assert reply["text"] == 'echo: say "hi" ✓'
        assert reply["finish_reason"] == "stop" and reply["usage"]["output_tokens"] > 0
        logs = [m.message for m in hosts[-1].logged if isinstance(m, protocol.Log)]
        assert logs[-1] == f"echo-provider: answering chat #{expected_count}"  # tark:storage kept the count
    stdout = b"".join(m.data for m in hosts[-1].logged if isinstance(m, protocol.GuestOutput))
    assert stdout == b"echo-provider: chat\n" * 2


def test_hello_auth_provides_openai_compatible_credentials(examples, pool_and_hosts) -> None:
    pool, _ = pool_and_hosts
    plugin = examples["hello-auth"]
    assert pool.call(plugin, "status", [], None).ret == 0
    credentials = ok_json(pool.call(plugin, "provider_auth_credentials", [], CAP_INFO))
    assert credentials["access_token"] == "env-token" and credentials["api_mode"] == "openai_compat"
    assert credentials["endpoint"] == "https://api.example.com/v1/chat/completions"  # posted to as given
    assert pool.call(plugin, "init_with_credentials", [b"stored-token"], None).ret == 0
    assert pool.call(plugin, "status", [], None).ret == 1
    assert pool.call(plugin, "get_token", [], 4096).output == b"stored-token"
    assert ok_json(pool.call(plugin, "provider_auth_credentials", [], CAP_INFO))["access_token"] == "stored-token"
    assert pool.call(plugin, "display_name", [], 256).output == b"Hello Auth"
    assert pool.call(plugin, "logout", [], None).ret == 0
    assert pool.call(plugin, "status", [], None).ret == 0
