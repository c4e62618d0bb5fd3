"""`tark auth NAME` with the PKCE flow against a real OAuth server on 127.0.0.1; the test plays the browser.

The example plugin examples/oauth-provider is installed and signed in through the real `tark` command; its
auth_process_tokens and provider_auth_init run in its own worker.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest

from policy.manifest import OAuthConfig
from supervisor import paths
from supervisor.oauth.callback import evaluate_callback
from supervisor.oauth.errors import OAuthError
from supervisor.oauth.pkce import authorization_url, challenge_s256, make_state, make_verifier, redirect_target
from supervisor.supervisor import Supervisor
from oauth_server import OAuthServer, build_example, free_port

WAIT_S = 30


def config(**overrides: object) -> OAuthConfig:
    values = dict(flow="pkce", auth_url="https://auth.example.com/authorize", token_url="https://auth.example.com/t",
                  client_id="cid", scopes=("openid", "chat"), redirect_uri="http://127.0.0.1:8976/cb")
    values.update(overrides)
    return OAuthConfig(**values)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- PKCE values

def test_verifier_is_128_alphanumerics_and_challenge_is_s256_base64url() -> None:
    verifier = make_verifier()
    assert len(verifier) == 128 and verifier.isalnum() and verifier.isascii()
    assert make_verifier() != verifier
    # RFC 7636 appendix B
    assert challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    state = make_state()
    assert len(state) == 43 and "=" not in state and state != make_state()


def test_authorization_url_encodes_every_key_and_value_and_keeps_an_existing_query() -> None:
    url = authorization_url(config(auth_url="https://auth.example.com/authorize?tenant=a%20b",
                                   redirect_uri="http://127.0.0.1:8976/cb?x=1&y=2",
                                   extra_params={"access type": "off&line", "prompt": "consent"}),
                            "challenge", "st/ate+=")
    assert url.count("?") == 1
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("auth.example.com", "/authorize")
    assert parse_qsl(parts.query) == [
        ("tenant", "a b"), ("response_type", "code"), ("client_id", "cid"),
        ("redirect_uri", "http://127.0.0.1:8976/cb?x=1&y=2"), ("scope", "openid chat"),
        ("code_challenge", "challenge"), ("code_challenge_method", "S256"), ("state", "st/ate+="),
        ("access type", "off&line"), ("prompt", "consent"),
    ]
    assert "access%20type=off%26line" in parts.query


def test_no_state_when_use_state_is_false_and_extra_params_cannot_replace_flow_parameters() -> None:
    assert "state=" not in authorization_url(config(use_state=False), "c", None)
    with pytest.raises(OAuthError, match="extra_params may not set code_challenge_method, state"):
        authorization_url(config(extra_params={"state": "x", "code_challenge_method": "plain"}), "c", "s")


@pytest.mark.parametrize("uri, message", [
    ("http://127.0.0.1:notaport/cb", "Invalid port in redirect_uri"),
    ("http://127.0.0.1:99999/cb", "Invalid port in redirect_uri"),
    ("http://127.0.0.1/cb", "Could not extract port from redirect_uri: http://127.0.0.1/cb"),
    ("https://example.com:8443/cb", "redirect_uri must be http://127.0.0.1:<port>"),
])
def test_redirect_uri_must_name_a_local_port(uri: str, message: str) -> None:
    with pytest.raises(OAuthError, match=message.replace("?", r"\?")):
        redirect_target(uri)


def test_redirect_target_is_the_port_and_path() -> None:
    target = redirect_target("http://localhost:8976/oauth/callback?ignored=1")
    assert (target.port, target.path) == (8976, "/oauth/callback")


@pytest.mark.parametrize("query, error", [
    ("code=c&state=good", None),
    ("code=c&state=bad", "OAuth state mismatch"),
    ("code=c", "has no state parameter"),
    ("state=good", "has no code parameter"),
    ("code=c&code=d&state=good", "repeats the parameter"),
    ("error=access_denied&error_description=User+said+no&state=good", "refused the sign-in: access_denied (User said no)"),
])
def test_the_callback_is_checked_against_the_state_of_this_sign_in(query: str, error: str | None) -> None:
    outcome = evaluate_callback(query, "good")
    if error is None:
        assert (outcome.code, outcome.error) == ("c", None)
    else:
        assert outcome.code is None and error in outcome.error


# -------------------------------------------------------------------------------------- end to end (CLI)

@pytest.fixture
def server():
    with OAuthServer() as running:
        yield running


@pytest.fixture
def example(tmp_path: Path, cli, server: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH", server.url)
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH_PORT", str(free_port()))
    result = cli("plugin", "add", "--yes", str(build_example(tmp_path / "src")))
    assert result.exit_code == 0, result.output
    return paths.config_dir() / "oauth-provider_oauth.json"


class AuthRun:
    """`tark auth ...` in a real subprocess; `url()` reads its output up to the printed authorization URL."""

    def __init__(self, argv: list[str], *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([*argv, "auth", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=dict(os.environ))

    def url(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.strip()
        self.proc.wait(WAIT_S)
        raise AssertionError(f"no URL printed: {self.lines} {self.proc.stderr.read() if self.proc.stderr else ''}")

    def finish(self) -> tuple[int, str, str]:
        # read through the same buffered file `url()` used: communicate() would skip what it already buffered
        assert self.proc.stdout is not None and self.proc.stderr is not None
        rest = self.proc.stdout.read()
        err = self.proc.stderr.read()
        self.proc.wait(WAIT_S)
        return self.proc.returncode, "\n".join([*self.lines, rest]), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def auth_run(tark_argv: list[str]):
    runs: list[AuthRun] = []

    def start(*args: str) -> AuthRun:
        runs.append(AuthRun(tark_argv, *args))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()


def test_pkce_sign_in_stores_the_plugins_processed_tokens_0600(example: Path, server: OAuthServer, auth_run) -> None:
    run = auth_run("oauth-demo", "--no-browser", "--timeout", str(WAIT_S))
    url = run.url(f"{server.url}/authorize?")
    page = httpx.get(url, follow_redirects=True, timeout=WAIT_S)  # the browser: server, then tark's listener
    assert page.status_code == 200 and "Authentication complete" in page.text
    code, out, err = run.finish()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["=== Tark Authentication ===", "Authenticating with: oauth-demo",
                         "Authenticating with OAuth Demo..."]
    assert lines[-5:] == ["Exchanging authorization code for tokens...", "✅ Successfully authenticated!",
                          f"Credentials saved to: {example}", "You can now use this provider:",
                          "  tark chat --provider oauth-demo"]

    [issued] = server.issued
    assert example.read_text() == json.dumps({"access_token": issued["access_token"], "source": "oauth-provider"},
                                             separators=(",", ":"))  # auth_process_tokens output, verbatim
    assert stat.S_IMODE(example.stat().st_mode) == 0o600
    assert [p.name for p in example.parent.iterdir()] == [example.name]  # no temporary file left behind

    [authorize] = server.requests_to("/authorize")
    assert authorize.params["code_challenge_method"] == "S256" and authorize.params["access_type"] == "offline"
    assert authorize.params["scope"] == "openid chat" and len(authorize.params["state"]) == 43
    [token] = server.requests_to("/token")
    assert len(token.params["code_verifier"]) == 128 and "client_secret" not in token.params

    # provider_auth_init kept the credentials in the plugin's storage: its own worker now answers with them
    with Supervisor() as supervisor:
        assert supervisor.call("oauth-provider", "provider_auth_status", []).ret == 1
        chat = supervisor.call("oauth-provider", "provider_chat", ['[{"role":"user","content":"hi"}]', "m"])
        assert json.loads(chat.output)["text"] == f"authenticated as {issued['access_token'][:4]}"


def test_a_callback_with_another_state_is_rejected(example: Path, server: OAuthServer, auth_run) -> None:
    run = auth_run("oauth-demo", "--no-browser", "--timeout", str(WAIT_S))
    url = run.url(f"{server.url}/authorize?")
    redirect = httpx.get(url, follow_redirects=False).headers["location"]
    parts = urlsplit(redirect)
    query = parse_qs(parts.query)
    forged = parts._replace(query=f"code={query['code'][0]}&state=attacker-state").geturl()
    page = httpx.get(forged)
    assert page.status_code == 400 and "state mismatch" in page.text
    code, out, err = run.finish()
    assert code == 1
    assert err.startswith("❌ Authentication failed: OAuth state mismatch")
    assert server.requests_to("/token") == [] and not example.exists()


@pytest.mark.parametrize("failure, message", [
    ((500, "upstream broke"), "Token request failed (500): upstream broke"),
    ((200, "<html>not json</html>"), "Failed to parse token response"),
])
def test_token_endpoint_errors_fail_the_sign_in(example: Path, server: OAuthServer, auth_run,
                                                failure: tuple[int, str], message: str) -> None:
    server.token_failure = failure
    run = auth_run("oauth-demo", "--no-browser", "--timeout", str(WAIT_S))
    httpx.get(run.url(f"{server.url}/authorize?"), follow_redirects=True)
    code, _, err = run.finish()
    assert (code, err.strip().splitlines()[0]) == (1, f"❌ Authentication failed: {message}" + (
        ": expected a JSON object" if "parse" in message else ""))
    assert not example.exists()


def test_no_callback_before_the_timeout(example: Path, auth_run) -> None:
    code, _, err = auth_run("oauth-demo", "--no-browser", "--timeout", "1").finish()
    assert code == 1
    assert err.strip() == ("❌ Authentication failed: Authentication timeout - no response after 1 seconds. "
                           "Please try again.")


def test_unresolved_placeholders_are_named(example: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARK_EXAMPLE_OAUTH")
    result = cli("auth", "oauth-demo", "--no-browser")
    assert result.exit_code == 1
    assert ("❌ Authentication failed: OAuth config has unresolved environment placeholders: "
            "auth_url, token_url, device_authorization_url") in result.output


def test_a_bad_redirect_port_is_reported(example: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARK_EXAMPLE_OAUTH_PORT", "http")
    result = cli("auth", "oauth-demo", "--no-browser")
    assert result.exit_code == 1 and "❌ Authentication failed: Invalid port in redirect_uri" in result.output


def test_an_authorization_server_refusal_is_reported(example: Path, server: OAuthServer, auth_run) -> None:
    server.authorize_error = "access_denied"
    run = auth_run("--no-browser", "oauth-demo")  # group options before NAME work too
    page = httpx.get(run.url(f"{server.url}/authorize?"), follow_redirects=True)
    assert page.status_code == 400
    code, _, err = run.finish()
    assert code == 1 and "refused the sign-in: access_denied" in err
