"""The device authorization grant (RFC 8628) against a real OAuth server on 127.0.0.1: `tark auth NAME` for a
plugin with `flow = "device_flow"`, and the poll loop's answers to pending, slow_down, denied and expired."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from policy.manifest import OAuthConfig
from supervisor import paths
from supervisor.oauth.device import DeviceAuthorization, PollSettings, _device_authorization, poll_for_tokens, request_device_code
from supervisor.oauth.errors import OAuthError
from supervisor.oauth.tokens import http_client
from oauth_server import CLIENT_ID, EXAMPLE_DIR, OAuthServer, build_example, free_port

FAST = PollSettings(min_interval_s=0.0, slow_down_step_s=0.3)


@pytest.fixture
def server():
    with OAuthServer() as running:
        yield running


def config(server: OAuthServer, **overrides: object) -> OAuthConfig:
    values = dict(flow="device_flow", auth_url=f"{server.url}/authorize", token_url=f"{server.url}/token",
                  client_id=CLIENT_ID, scopes=("openid", "chat"), redirect_uri="http://127.0.0.1:1/unused",
                  device_authorization_url=f"{server.url}/device")
    values.update(overrides)
    return OAuthConfig(**values)  # type: ignore[arg-type]


def sign_in(server: OAuthServer, settings: PollSettings = FAST, **overrides: object) -> dict:
    cfg = config(server, **overrides)
    with http_client() as client:
        device = request_device_code(client, cfg)
        return poll_for_tokens(client, cfg, device, settings)


def polls(server: OAuthServer) -> list:
    return server.requests_to("/token")


def device_manifest(**replace: str) -> str:
    text = (EXAMPLE_DIR / "plugin.toml").read_text().replace('flow = "pkce"', 'flow = "device_flow"')
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def test_tark_auth_runs_the_device_flow_and_stores_the_plugins_credentials(
        tmp_path: Path, cli, server: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH", server.url)
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH_PORT", str(free_port()))
    assert cli("plugin", "add", "--yes", str(build_example(tmp_path / "src", manifest=device_manifest()))).exit_code == 0
    server.device_script = ["authorization_pending", "authorization_pending"]

    result = cli("auth", "oauth-demo", "--min-poll-interval", "0")
    assert result.exit_code == 0, result.output
    assert f"To sign in, visit {server.url}/activate and enter the code WDJB-MJHT" in result.output
    assert "✅ Successfully authenticated!" in result.output
    path = paths.config_dir() / "oauth-provider_oauth.json"
    [issued] = server.issued
    assert json.loads(path.read_text()) == {"access_token": issued["access_token"], "source": "oauth-provider"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [device] = server.requests_to("/device")
    assert device.params == {"client_id": CLIENT_ID, "scope": "openid chat"}
    assert [p.params["grant_type"] for p in polls(server)] == ["urn:ietf:params:oauth:grant-type:device_code"] * 3


def test_device_flow_without_a_device_authorization_url_is_a_clear_error(
        tmp_path: Path, cli, server: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH", server.url)
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH_PORT", "8976")
    manifest = device_manifest(**{'device_authorization_url = "${TARK_EXAMPLE_OAUTH}/device"\n': ""})
    assert cli("plugin", "add", "--yes", str(build_example(tmp_path / "src", manifest=manifest))).exit_code == 0
    result = cli("auth", "oauth-demo")
    assert result.exit_code == 1
    assert ("❌ Authentication failed: OAuth flow 'device_flow' needs device_authorization_url in the plugin's "
            "[oauth] section") in result.output
    assert server.requests == []


def test_pending_answers_are_polled_until_the_user_approves(server: OAuthServer) -> None:
    server.device_script = ["authorization_pending"] * 3
    tokens = sign_in(server)
    assert tokens["access_token"] == server.issued[0]["access_token"]
    assert len(polls(server)) == 4


def test_slow_down_adds_to_the_interval(server: OAuthServer) -> None:
    server.device_script = ["authorization_pending", "slow_down", "authorization_pending"]
    sign_in(server)
    times = [p.at for p in polls(server)]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert gaps[0] < 0.25  # interval 0 at first
    assert min(gaps[1:]) >= 0.29  # then 0 + one slow_down step (0.3 s), kept for the following polls


def test_the_minimum_interval_holds_when_the_server_asks_for_less(server: OAuthServer) -> None:
    server.device_script = ["authorization_pending"]
    sign_in(server, PollSettings(min_interval_s=0.4))
    first, second = (p.at for p in polls(server))
    assert second - first >= 0.39


@pytest.mark.parametrize("answer, message", [
    ("access_denied", "The sign-in request was denied (access_denied)."),
    ("expired_token", "The device code expired before the sign-in was completed (expired_token). Please try again."),
    ("invalid_grant", 'Token request failed (400): {"error": "invalid_grant"}'),
])
def test_refusals_end_the_poll_with_a_clear_error(server: OAuthServer, answer: str, message: str) -> None:
    server.device_script = ["authorization_pending", answer]
    with pytest.raises(OAuthError) as caught:
        sign_in(server)
    assert str(caught.value) == message
    assert len(polls(server)) == 2


def test_the_code_expires_locally_when_the_user_never_approves(server: OAuthServer) -> None:
    server.device_expires_in = 1
    server.device_script = ["authorization_pending"] * 100
    with pytest.raises(OAuthError, match="^The device code expired before the sign-in was completed. Please try again.$"):
        sign_in(server, PollSettings(min_interval_s=0.2))
    assert 3 <= len(polls(server)) <= 6


def test_a_shorter_timeout_ends_the_wait_with_tarks_message(server: OAuthServer) -> None:
    server.device_script = ["authorization_pending"] * 100
    with pytest.raises(OAuthError, match="^Authentication timeout - no response after 0.5 seconds. Please try again.$"):
        sign_in(server, PollSettings(min_interval_s=0.2, timeout_s=0.5))


def test_a_refused_device_authorization_request_is_reported(server: OAuthServer) -> None:
    with pytest.raises(OAuthError, match=r"^Device authorization request failed \(401\): .*invalid_client"):
        sign_in(server, client_id="someone-else")


@pytest.mark.parametrize("document, message", [
    ({"device_code": "d", "verification_uri": "https://x/activate"}, "no user_code string"),
    ({"device_code": "d", "user_code": "U", "verification_uri": "javascript:alert(1)"}, r"is not an http\(s\) URL"),
    ({"device_code": "d", "user_code": "U", "verification_uri": "https://x", "interval": "5"}, "interval is not"),
    ({"device_code": "d", "user_code": "U", "verification_uri": "https://x", "expires_in": -1}, "expires_in is not"),
])
def test_malformed_device_authorization_responses_are_named(document: dict, message: str) -> None:
    with pytest.raises(OAuthError, match=message):
        _device_authorization(document)


def test_device_authorization_defaults_and_googles_spelling() -> None:
    device = _device_authorization({"device_code": "d", "user_code": "U", "verification_url": "https://x/device"})
    assert device == DeviceAuthorization("d", "U", "https://x/device", None, 5.0, 900.0)
