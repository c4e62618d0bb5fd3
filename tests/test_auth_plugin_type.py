"""A `type = "auth"` plugin (tark's legacy auth exports) driven through `tark auth`: the device flow signs in,
the credentials reach the plugin through init_with_credentials, status and get_token see them, logout forgets."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import wasmtime

from oauth_server import OAuthServer
from supervisor import paths

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "device-auth"


@pytest.fixture
def installed(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch):
    with OAuthServer() as server:
        monkeypatch.setenv("TARK_EXAMPLE_OAUTH", server.url)
        source = tmp_path / "device-auth"
        shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.wasm"))
        (source / "plugin.wasm").write_bytes(bytes(wasmtime.wat2wasm((source / "plugin.wat").read_text())))
        assert cli("plugin", "add", "--yes", str(source)).exit_code == 0
        yield server


def auth_status(cli) -> dict:
    result = cli("auth", "status", "--json")
    assert result.exit_code == 0, result.output
    return next(entry for entry in json.loads(result.output) if entry["plugin"] == "device-auth")


def test_device_flow_signs_in_an_auth_plugin_and_its_legacy_exports_see_the_token(installed, cli, run_tark):
    server = installed
    server.device_script = ["authorization_pending"]
    before = auth_status(cli)
    assert (before["has_credentials"], before["plugin_status"], before["oauth_flow"]) == (
        False, "not authenticated", "device_flow")

    result = cli("auth", "device-auth", "--min-poll-interval", "0")
    assert result.exit_code == 0, result.output
    assert "✅ Successfully authenticated!" in result.output
    assert "tark chat" not in result.output  # an auth plugin is no chat provider
    path = paths.config_dir() / "device-auth_oauth.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [issued] = server.issued
    stored = json.loads(path.read_text())
    assert stored["access_token"] == issued["access_token"] and "expires_at" in stored

    # the plugin kept what init_with_credentials gave it, in its own worker and storage
    token = run_tark("plugin", "call", "device-auth", "get_token", "--json")
    assert json.loads(token.stdout) == {"ret": len(issued["access_token"]), "output": issued["access_token"]}
    assert json.loads(run_tark("plugin", "call", "device-auth", "status", "--json").stdout)["ret"] == 1
    after = auth_status(cli)
    assert (after["has_credentials"], after["plugin_status"]) == (True, "authenticated")

    logout = cli("auth", "logout", "device-auth")
    assert logout.exit_code == 0, logout.output
    assert not path.exists()
    assert json.loads(run_tark("plugin", "call", "device-auth", "status", "--json").stdout)["ret"] == 0


def test_denied_device_sign_in_fails_clearly_and_stores_nothing(installed, cli):
    installed.device_script = ["access_denied"]
    result = cli("auth", "device-auth", "--min-poll-interval", "0")
    assert result.exit_code == 1
    assert "❌ Authentication failed" in result.output
    assert not (paths.config_dir() / "device-auth_oauth.json").exists()
