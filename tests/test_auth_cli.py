"""`tark auth` around the flows: choosing a provider, `tark auth status`, `tark auth logout`, what the plugin's
own exports decide (auth_process_tokens, provider_auth_init), and that no other plugin can read the stored
credentials whatever its fs_read says.

Sign-ins here use the device flow (no browser needed) of examples/oauth-provider against a real local server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import wasmtime

from supervisor import paths
from supervisor.supervisor import Supervisor
from oauth_server import EXAMPLE_DIR, OAuthServer, build_example, free_port
from wasm_fixtures import make_guest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with OAuthServer() as running:
        monkeypatch.setenv("TARK_EXAMPLE_OAUTH", running.url)
        monkeypatch.setenv("TARK_EXAMPLE_OAUTH_PORT", str(free_port()))
        yield running


def example_manifest(*, callback: bool = True, extra_oauth: str = "") -> str:
    text = (EXAMPLE_DIR / "plugin.toml").read_text().replace('flow = "pkce"', 'flow = "device_flow"')
    if not callback:
        text = text.replace('process_tokens_callback = "auth_process_tokens"\n', "")
    return text + extra_oauth


@pytest.fixture
def install(tmp_path: Path, cli):
    def add(source: Path) -> None:
        result = cli("plugin", "add", "--yes", str(source))
        assert result.exit_code == 0, result.output

    return add


@pytest.fixture
def oauth_example(tmp_path: Path, install, server: OAuthServer) -> Path:
    install(build_example(tmp_path / "oauth-src", manifest=example_manifest()))
    return paths.config_dir() / "oauth-provider_oauth.json"


@pytest.fixture
def hello_auth(tmp_path: Path, install) -> None:
    source = tmp_path / "hello-src"
    source.mkdir()
    (source / "plugin.toml").write_text((REPO / "examples/hello-auth/plugin.toml").read_text())
    (source / "plugin.wasm").write_bytes(bytes(wasmtime.wat2wasm((REPO / "examples/hello-auth/plugin.wat").read_text())))
    install(source)


def sign_in(cli, name: str = "oauth-demo"):
    return cli("auth", name, "--min-poll-interval", "0")


# ------------------------------------------------------------------------------------------ choosing

def test_without_a_name_tark_auth_lists_oauth_providers_and_asks(cli, oauth_example: Path, hello_auth) -> None:
    result = cli("auth", "--min-poll-interval", "0", input="1\n")
    assert result.exit_code == 0, result.output
    assert ("=== Tark Authentication ===\nSelect a provider to authenticate:\n"
            "  1. oauth-demo - OAuth Demo (plugin)\nEnter choice (1-1): 1\nAuthenticating with: oauth-demo\n"
            ) in result.output  # hello-auth has no [oauth] section, so it is not offered
    assert oauth_example.exists()


@pytest.mark.parametrize("answer", ["2", "x", ""])
def test_an_invalid_choice_is_refused(cli, oauth_example: Path, answer: str) -> None:
    result = cli("auth", input=answer + "\n")
    assert result.exit_code == 1 and result.output.endswith("Error: Invalid choice\n")


def test_unknown_names_and_plugins_without_oauth(cli, oauth_example: Path, hello_auth) -> None:
    result = cli("auth", "nope")
    assert result.exit_code == 1
    assert "Error: Unknown provider: nope. Try 'tark auth' for a list of providers." in result.output
    assert "has no OAuth configuration" in cli("auth", "hello-auth").output
    assert cli("plugin", "disable", "oauth-provider").exit_code == 0
    assert "Unknown provider: oauth-demo" in cli("auth", "oauth-demo").output
    assert "Plugin 'oauth-provider' is disabled" in cli("auth", "oauth-provider").output


def test_the_plugin_id_names_the_provider_too(cli, oauth_example: Path) -> None:
    result = sign_in(cli, "oauth-provider")
    assert result.exit_code == 0, result.output
    assert "  tark chat --provider oauth-provider" in result.output


# ------------------------------------------------------------------------------------------ status and logout

def test_status_reports_credentials_and_each_plugins_own_answer(cli, oauth_example: Path, hello_auth) -> None:
    before = cli("auth", "status")
    assert before.exit_code == 0, before.output
    assert before.output.startswith("=== Authentication Status ===\n")
    assert ("❌ oauth-demo - OAuth Demo (plugin oauth-provider)\n"
            f"     Credentials: not signed in (device_flow; expected at {oauth_example})\n"
            "     Plugin reports: not authenticated\n") in before.output
    assert ("❌ hello - Hello (plugin hello-auth)\n     Credentials: none (no [oauth] section)\n"
            "     Plugin reports: not authenticated\n") in before.output  # legacy `status` export: 0
    assert before.output.endswith("Authenticate with: tark auth <provider>\nLogout with: tark auth logout <provider>\n")

    assert sign_in(cli).exit_code == 0
    after = cli("auth", "status")
    assert ("✅ oauth-demo - OAuth Demo (plugin oauth-provider)\n"
            f"     Credentials: {oauth_example}\n     Plugin reports: authenticated\n") in after.output
    documents = {d["plugin"]: d for d in json.loads(cli("auth", "status", "--json").output)}
    assert documents["oauth-provider"] == {
        "plugin": "oauth-provider", "providers": ["oauth-demo"], "display_name": "OAuth Demo",
        "oauth_flow": "device_flow", "credentials_path": str(oauth_example), "has_credentials": True,
        "expires_at": None, "plugin_status": "authenticated", "problems": [], "type": "provider",
    }
    assert documents["hello-auth"]["plugin_status"] == "not authenticated"


def test_without_a_callback_the_token_response_is_stored_sorted_with_expires_at(
        tmp_path: Path, cli, install, server: OAuthServer) -> None:
    install(build_example(tmp_path / "src", manifest=example_manifest(callback=False)))
    started = time.time()
    assert sign_in(cli).exit_code == 0
    path = paths.config_dir() / "oauth-provider_oauth.json"
    stored = json.loads(path.read_text())
    expires_at = stored.pop("expires_at")
    assert stored == server.issued[0]
    assert started + 3600 - 1 <= expires_at <= time.time() + 3600
    assert path.read_text() == json.dumps({**stored, "expires_at": expires_at}, indent=2, sort_keys=True)
    [document] = json.loads(cli("auth", "status", "--json").output)
    assert (document["expires_at"], document["plugin_status"]) == (expires_at, "authenticated")
    assert "     Expires: " in cli("auth", "status").output


def test_logout_deletes_the_credentials_and_tells_the_plugin(cli, oauth_example: Path) -> None:
    assert sign_in(cli).exit_code == 0
    result = cli("auth", "logout", "oauth-demo")
    assert result.exit_code == 0, result.output
    assert result.output == f"✅ Cleared OAuth Demo OAuth credentials\n   Deleted: {oauth_example}\n"
    assert not oauth_example.exists()
    with Supervisor() as supervisor:  # provider_auth_logout ran in the plugin's worker: storage forgotten
        assert supervisor.call("oauth-provider", "provider_auth_status", []).ret == 2
    again = cli("auth", "logout", "oauth-demo")
    assert (again.exit_code, again.output) == (0, "No credentials found for OAuth Demo\n")


# ------------------------------------------------------------------------------------------ the plugin decides

GUEST_OAUTH = """
[oauth]
flow = "device_flow"
auth_url = "${TARK_EXAMPLE_OAUTH}/authorize"
token_url = "${TARK_EXAMPLE_OAUTH}/token"
device_authorization_url = "${TARK_EXAMPLE_OAUTH}/device"
client_id = "tark-example"
scopes = ["openid"]
redirect_uri = "http://127.0.0.1:8976/cb"
process_tokens_callback = "anything: only its presence matters"
"""

REJECTING_TOKENS = r"""
  (data (i32.const 100) "{\"error\":\"bad tokens\"}")
  (func (export "auth_process_tokens") (param i32 i32) (param $ret i32) (result i32)
    (memory.copy (local.get $ret) (i32.const 100) (i32.const 22)) (i32.const -22))
"""

REJECTING_INIT = r"""
  (func (export "provider_auth_init") (param i32 i32) (result i32) (i32.const -3))
"""


def test_auth_process_tokens_errors_fail_the_sign_in_and_store_nothing(tmp_path: Path, cli, install, server) -> None:
    make_guest(tmp_path / "src", REJECTING_TOKENS, name="picky")
    with open(tmp_path / "src" / "plugin.toml", "a") as manifest:
        manifest.write(GUEST_OAUTH)
    install(tmp_path / "src")
    result = sign_in(cli, "picky")
    assert result.exit_code == 1
    assert '❌ Authentication failed: Plugin auth_process_tokens returned error: {"error":"bad tokens"}' in result.output
    assert not (paths.config_dir() / "picky_oauth.json").exists()


def test_without_the_export_the_callback_input_is_stored_and_init_errors_are_reported(
        tmp_path: Path, cli, install, server) -> None:
    make_guest(tmp_path / "src", REJECTING_INIT, name="picky")
    with open(tmp_path / "src" / "plugin.toml", "a") as manifest:
        manifest.write(GUEST_OAUTH)
    install(tmp_path / "src")
    result = sign_in(cli, "picky")
    path = paths.config_dir() / "picky_oauth.json"
    assert result.exit_code == 1
    assert (f"❌ Authentication failed: Function provider_auth_init failed with error code: -3 (the credentials "
            f"were saved to {path}, but the plugin did not accept them)") in result.output
    issued = server.issued[0]
    assert path.read_text() == json.dumps(  # tark's callback input: compact, absent fields null
        {"access_token": issued["access_token"], "refresh_token": "refresh-1", "id_token": None,
         "expires_in": 3600, "token_type": "Bearer", "scope": "openid chat"}, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ never readable by others

READER = """
  (func (export "read") (param $p i32) (param $l i32) (param $ret i32) (result i32)
    (call $fs_read (local.get $p) (local.get $l) (local.get $ret)))
"""


def test_no_other_plugin_can_read_credentials_whatever_its_fs_read_covers(
        tmp_path: Path, cli, install, server, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path  # TARK_CONFIG_DIR and TARK_DATA_DIR are under it
    monkeypatch.setenv("HOME", str(home))
    policy = tmp_path / "policy.toml"  # a credentials_path outside the plugin's own location needs the admin
    policy.write_text('[allow]\ncredentials_path = ["~/secrets/*.json"]\n')
    policy.chmod(0o600)
    monkeypatch.setenv("TARK_POLICY", str(policy))
    install(build_example(tmp_path / "oauth-src", manifest=example_manifest()))
    custom = example_manifest(extra_oauth='credentials_path = "~/secrets/custom_oauth.json"\n')
    install(build_example(tmp_path / "custom-src", manifest=custom.replace('name = "oauth-provider"',
                                                                            'name = "custom-oauth"')
                          .replace('id = "oauth-demo"', 'id = "custom-demo"')))
    assert sign_in(cli).exit_code == 0 and sign_in(cli, "custom-demo").exit_code == 0
    default_path = paths.config_dir() / "oauth-provider_oauth.json"
    custom_path = home / "secrets" / "custom_oauth.json"
    assert default_path.exists() and custom_path.exists()
    (home / "notes.txt").write_text("readable")

    broad = '["~/notes.txt", "~/secrets", "~/tark-config", "~/tark-data/**"]'  # ~/** itself is refused at install
    make_guest(tmp_path / "reader-src", READER, name="reader", capabilities=f"fs_read = {broad}")
    install(tmp_path / "reader-src")
    with Supervisor() as supervisor:
        def read(path: str):
            return supervisor.call("reader", "read", [path])

        assert (read("~/notes.txt").ret, read("~/notes.txt").output) == (8, "readable")
        for secret in (str(default_path), "~/secrets/custom_oauth.json", str(custom_path),
                       str(paths.plugins_dir() / "oauth-provider" / "plugin.toml")):
            assert read(secret).ret == -2, secret
        audit = (paths.data_root() / "audit.log").read_text()
    assert "never readable by plugins" in audit
