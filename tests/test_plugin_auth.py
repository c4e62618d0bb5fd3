"""`tark plugin auth <id>`: channel settings stored with tark's envelope, globally or in the project's .tark, and
handed to `channel_auth_init` (embedded and through the daemon). The example channel (examples/credentials-channel)
refuses to work without its credentials and answers with them hex-encoded, so every test sees byte for byte what
the plugin received."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from supervisor import envelope
from supervisor.supervisor import Supervisor
from oauth_server import CLIENT_ID, OAuthServer, free_port
from wasm_fixtures import make_guest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "credentials-channel"
NAME = "credentials-channel"
PASS = "tark test passphrase"
PLAINTEXT = '{"config":{"api_key":"k-123","workspace":"main"}}'


# ------------------------------------------------------------------------------------------------ helpers

def reference_open(text: str, passphrase: str) -> str:
    """Decrypt with the documented parameters, using cryptography's own Argon2id (not the module under test)."""
    document = json.loads(text)
    salt, nonce, sealed = (base64.b64decode(document[f] + "=" * (-len(document[f]) % 4))
                           for f in ("salt", "nonce", "ciphertext"))
    key = Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=19456).derive(passphrase.encode())
    return ChaCha20Poly1305(key).decrypt(nonce, sealed, None).decode()


def reference_seal(plaintext: str, passphrase: str) -> str:
    """An envelope as tark writes it, built from the documented parameters."""
    salt, nonce = os.urandom(16), os.urandom(12)
    key = Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=19456).derive(passphrase.encode())
    sealed = ChaCha20Poly1305(key).encrypt(nonce, plaintext.encode(), None)
    b64 = lambda data: base64.b64encode(data).decode().rstrip("=")  # noqa: E731
    return json.dumps({"version": 1, "kdf": "argon2id", "salt": b64(salt), "nonce": b64(nonce),
                       "ciphertext": b64(sealed)}, indent=2)


def unhex(text: str) -> str:
    return bytes.fromhex(text).decode()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.setenv("TARK_PLUGIN_PASSPHRASE", PASS)
    return directory


@pytest.fixture
def installed(cli, project: Path) -> Path:
    done = cli("plugin", "add", "--yes", str(EXAMPLE))
    assert done.exit_code == 0, done.output
    return project / ".tark" / "plugins" / NAME / "oauth.json"


def send(cli) -> str:
    """`tark channel send` to the example: the credentials it got, decoded."""
    done = cli("channel", "send", NAME, "hi", "--conversation", "c1", "--json")
    assert done.exit_code == 0, done.output
    (message_id,) = json.loads(done.stdout)["message_ids"]
    return unhex(message_id)


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ what the user does

def test_project_credentials_are_encrypted_0600_and_reach_channel_auth_init(cli, installed: Path) -> None:
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k-123", "--no-oauth", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"plugin": NAME, "scope": "project", "path": str(installed),
                                       "encrypted": True, "settings": ["api_key", "workspace"], "oauth": False,
                                       "auth_init": "accepted"}
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    for directory in (installed.parent, installed.parent.parent, installed.parent.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert list(installed.parent.iterdir()) == [installed]  # no temporary file left behind
    assert reference_open(installed.read_text(), PASS) == PLAINTEXT
    assert send(cli) == PLAINTEXT


def test_global_credentials_live_in_tarks_config_dir(cli, installed: Path) -> None:
    done = cli("plugin", "auth", NAME, "--set", "api_key=g-1", "--set", "workspace=w2", "--no-oauth")
    assert done.exit_code == 0, done.output
    path = Path(os.environ["TARK_CONFIG_DIR"]) / f"{NAME}_oauth.json"
    assert done.output.endswith(f"✅ Saved credentials to {path}\n")
    assert done.output.startswith(f"=== Plugin OAuth: {NAME} ===\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert reference_open(path.read_text(), PASS) == '{"config":{"api_key":"g-1","workspace":"w2"}}'
    assert not installed.exists()
    assert send(cli) == '{"config":{"api_key":"g-1","workspace":"w2"}}'


def test_the_project_file_wins_over_the_global_one(cli, installed: Path) -> None:
    assert cli("plugin", "auth", NAME, "--set", "api_key=global", "--no-oauth").exit_code == 0
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=local", "--no-oauth").exit_code == 0
    assert json.loads(send(cli))["config"]["api_key"] == "local"


def test_settings_from_stdin_for_scripts(cli, installed: Path) -> None:
    done = cli("plugin", "auth", NAME, "--scope", "project", "--stdin", input='{"api_key":"s ✓","workspace":"x"}')
    assert done.exit_code == 0, done.output
    assert send(cli) == '{"config":{"api_key":"s ✓","workspace":"x"}}'


def test_a_file_tark_wrote_opens_here(cli, installed: Path) -> None:
    installed.parent.mkdir(parents=True)
    installed.write_text(reference_seal('{"config":{"api_key":"from-tark"},"tokens":{"access_token":"t"}}', PASS))
    assert send(cli) == '{"config":{"api_key":"from-tark"},"tokens":{"access_token":"t"}}'


def test_a_plaintext_file_is_handed_over_as_it_is(cli, installed: Path) -> None:
    installed.parent.mkdir(parents=True)
    installed.write_text('{"config":{"api_key":"plain"}}')
    assert send(cli) == '{"config":{"api_key":"plain"}}'


def test_without_credentials_the_example_refuses_to_work(cli, installed: Path) -> None:
    done = cli("channel", "send", NAME, "hi", "--conversation", "c1")
    assert done.exit_code == 1
    assert "Function channel_send failed with error code: -1" in done.output


# ------------------------------------------------------------------------------------------- user errors

def test_unknown_plugin(cli, project: Path) -> None:
    done = cli("plugin", "auth", "nope", "--no-oauth")
    assert (done.exit_code, done.output) == (1, "Error: Plugin 'nope' not found\n")


def test_a_plugin_that_is_not_a_channel(cli, installed: Path) -> None:
    assert cli("plugin", "add", "--yes", str(REPO / "examples" / "echo-provider")).exit_code == 0
    done = cli("plugin", "auth", "echo-provider", "--no-oauth")
    assert done.exit_code == 1
    assert "Plugin 'echo-provider' is a provider plugin, not a channel" in done.output


def test_a_channel_without_oauth_section(cli, installed: Path) -> None:
    assert cli("plugin", "add", "--yes", str(REPO / "examples" / "echo-channel")).exit_code == 0
    done = cli("plugin", "auth", "echo-channel")
    assert (done.exit_code, done.output) == (1, "Error: Plugin 'echo-channel' has no OAuth configuration\n")


def test_missing_and_unknown_settings_write_nothing(cli, installed: Path) -> None:
    done = cli("plugin", "auth", NAME, "--scope", "project", "--no-oauth")
    assert done.exit_code == 1
    assert "missing required setting api_key for plugin 'credentials-channel': pass --set api_key=VALUE" in done.output
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=a", "--set", "colour=red")
    assert done.exit_code == 1
    assert "unknown setting colour (this plugin's settings: api_key, workspace)" in done.output
    done = cli("plugin", "auth", NAME, "--stdin", input='{"api_key": 5}')
    assert done.exit_code == 1 and "one JSON object of strings" in done.output
    assert not (installed.parent.parent.parent).exists()


def test_without_a_passphrase_and_a_terminal_nothing_is_written(cli, installed: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARK_PLUGIN_PASSPHRASE")
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=a", "--no-oauth")
    assert done.exit_code == 1
    assert f"set TARK_PLUGIN_PASSPHRASE to encrypt {installed}" in done.output
    assert not installed.exists()


def test_a_plugin_that_rejects_its_credentials_is_reported(cli, project: Path, tmp_path: Path) -> None:
    """The settings are saved, but the plugin's channel_auth_init said no: exit 1, and the user is told both."""
    source = tmp_path / "renamed"
    shutil.copytree(EXAMPLE, source)
    manifest = (source / "plugin.toml").read_text().replace('key = "api_key"', 'key = "token"')
    (source / "plugin.toml").write_text(manifest)
    assert cli("plugin", "add", "--yes", str(source)).exit_code == 0
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "token=t", "--no-oauth")
    assert done.exit_code == 1
    path = project / ".tark" / "plugins" / NAME / "oauth.json"
    assert (f"Saved credentials to {path}, but the plugin did not accept them: "
            "Function channel_auth_init failed with error code: -1") in done.output


# ------------------------------------------------------------------------------------------ attacker side

def test_a_wrong_passphrase_never_writes_anything(cli, installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=first", "--no-oauth").exit_code == 0
    before = tree(installed.parent)
    monkeypatch.setenv("TARK_PLUGIN_PASSPHRASE", "not the passphrase")
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=second", "--no-oauth")
    assert done.exit_code == 1
    assert f"Wrong passphrase for {installed}" in done.output and "nothing was written" in done.output
    assert tree(installed.parent) == before
    done = cli("channel", "send", NAME, "hi", "--conversation", "c1")
    assert done.exit_code == 1 and f"Wrong passphrase for {installed}" in done.output
    assert tree(installed.parent) == before
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=second", "--no-oauth", "--replace")
    assert done.exit_code == 0, done.output
    assert reference_open(installed.read_text(), "not the passphrase") == '{"config":{"api_key":"second",' \
                                                                          '"workspace":"main"}}'


def test_a_tampered_ciphertext_is_refused_and_the_plugin_gets_nothing(cli, installed: Path) -> None:
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k", "--no-oauth").exit_code == 0
    document = json.loads(installed.read_text())
    raw = bytearray(base64.b64decode(document["ciphertext"] + "=" * (-len(document["ciphertext"]) % 4)))
    raw[5] ^= 0x20
    document["ciphertext"] = base64.b64encode(bytes(raw)).decode().rstrip("=")
    installed.write_text(json.dumps(document, indent=2))
    done = cli("channel", "send", NAME, "hi", "--conversation", "c1")
    assert done.exit_code == 1
    assert f"Wrong passphrase for {installed}" in done.output and "altered" in done.output


def test_a_corrupt_envelope_says_so(cli, installed: Path) -> None:
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps({"version": 1, "kdf": "argon2id", "salt": "AAAAAAAAAAAAAAAAAAAAAA",
                                     "nonce": "AAAA", "ciphertext": "AAAA"}))
    done = cli("channel", "send", NAME, "hi", "--conversation", "c1")
    assert done.exit_code == 1
    assert f"{installed} is corrupt: the nonce has 3 bytes (expected 12)" in done.output


STEAL = """
  (func (export "steal") (param $p i32) (param $n i32) (param $ret i32) (result i32)
    (call $fs_read (local.get $p) (local.get $n) (local.get $ret)))
"""


def test_another_plugin_cannot_read_the_project_credentials(cli, installed: Path, project: Path,
                                                            tmp_path: Path) -> None:
    """A hostile plugin granted fs_read on the whole project still cannot read .tark/plugins/*/oauth.json."""
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k", "--no-oauth").exit_code == 0
    (project / "notes.txt").write_text("readable")
    make_guest(tmp_path / "thief-src", STEAL, name="thief", type="provider",
               capabilities=f'fs_read = ["{project}"]')
    assert cli("plugin", "add", "--yes", str(tmp_path / "thief-src")).exit_code == 0
    with Supervisor() as supervisor:
        allowed = supervisor.call("thief", "steal", [str(project / "notes.txt")])
        assert (allowed.ret, allowed.output) == (8, "readable")
        for target in (installed, installed.parent, project / ".tark" / "plugins" / NAME / "data" / "x"):
            assert supervisor.call("thief", "steal", [str(target)]).ret == -2, target
        link = project / "innocent.json"
        link.symlink_to(installed)
        assert supervisor.call("thief", "steal", [str(link)]).ret == -2


# ---------------------------------------------------------------------------------------------- the daemon

@pytest.fixture
def daemon(run_tark, tmp_path: Path):
    elsewhere = tmp_path / "daemon-cwd"
    elsewhere.mkdir()
    started = run_tark("supervisor", "start", "--webhook-port", "0", cwd=elsewhere)
    assert started.returncode == 0, started.stderr
    yield
    stopped = run_tark("supervisor", "stop")
    assert stopped.returncode == 0, stopped.stderr


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
    return value


def test_through_the_daemon_the_channel_starts_with_the_projects_credentials(cli, installed: Path, daemon,
                                                                             run_tark, project: Path) -> None:
    """The daemon runs elsewhere; `tark channel start` from the project hands it the project and the passphrase.
    `tark plugin auth` itself talks to the daemon's worker for channel_auth_init."""
    refused = run_tark("channel", "start", NAME, cwd=project)
    assert refused.returncode == 1  # nothing stored yet: channel_start answers -1
    assert "Channel start failed with error code: -1" in refused.stderr
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k-123", "--no-oauth", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["auth_init"] == "accepted"
    started = run_tark("channel", "start", NAME, "--poll-ms", "20", cwd=project)
    assert started.returncode == 0, started.stderr

    def inbox() -> list:
        status = run_tark("channel", "status", NAME, "--json", cwd=project)
        return json.loads(status.stdout)["channels"][0]["inbox"]

    (entry,) = wait_for(inbox)
    assert (entry["conversation_id"], unhex(entry["text"])) == ("credentials", PLAINTEXT)
    assert run_tark("channel", "stop", NAME).returncode == 0


def test_through_the_daemon_a_wrong_passphrase_is_refused_before_anything_starts(cli, installed: Path, daemon,
                                                                                 run_tark, project: Path,
                                                                                 monkeypatch) -> None:
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k", "--no-oauth").exit_code == 0
    monkeypatch.setenv("TARK_PLUGIN_PASSPHRASE", "wrong")
    refused = run_tark("channel", "start", NAME, cwd=project)
    assert refused.returncode == 1
    assert f"Wrong passphrase for {installed}" in refused.stderr
    status = json.loads(run_tark("channel", "status", "--json").stdout)
    assert status["channels"] == []


# --------------------------------------------------------------------------------- on a terminal, as tark

def converse(argv: list[str], cwd: Path, script: list[tuple[str, str]], timeout_s: float = 60.0) -> tuple[int, str]:
    """Run argv on a pseudo-terminal; for each (prompt, answer) wait for the prompt, then type the answer."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=dict(os.environ),
                               close_fds=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout_s
    pending = list(script)
    try:
        while True:
            if pending and pending[0][0].encode() in seen:
                prompt, answer = pending.pop(0)
                seen = seen.replace(prompt.encode(), b"<" + prompt.encode() + b">", 1)
                os.write(master, answer.encode() + b"\n")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"stuck; output so far:\n{seen.decode(errors='replace')}")
        return process.wait(timeout=10), seen.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


DISCORD_PROBE = """
  (func (export "channel_auth_init") (param $p i32) (param $n i32) (result i32)
    (drop (call $storage_set (i32.const 0) (i32.const 5) (local.get $p) (local.get $n))) (i32.const 0))
  (func (export "channel_start") (result i32) (i32.const 0))
  (func (export "got") (param $ret i32) (result i32)
    (call $storage_get (i32.const 0) (i32.const 5) (local.get $ret)))
  (data (i32.const 0) "creds")
"""


def test_discord_is_asked_exactly_tarks_questions(cli, project: Path, tmp_path: Path, tark_argv) -> None:
    source = tmp_path / "discord-src"
    make_guest(source, DISCORD_PROBE, name="discord", type="channel", capabilities="storage = true")
    with open(source / "plugin.toml", "a") as manifest:
        manifest.write('[oauth]\nflow = "pkce"\nauth_url = "https://discord.com/oauth2/authorize"\n'
                       'token_url = "https://discord.com/api/oauth2/token"\nclient_id = "${DISCORD_CLIENT_ID}"\n'
                       'scopes = ["applications.commands"]\nredirect_uri = "http://localhost:8888/callback"\n')
    assert cli("plugin", "add", "--yes", str(source)).exit_code == 0
    env_pass = os.environ.pop("TARK_PLUGIN_PASSPHRASE")
    try:
        code, output = converse([*tark_argv, "plugin", "auth", "discord"], project, [
            ("Choose [1-2]: ", "2"),
            ("Discord Application ID: ", "123456789"),
            ("Discord Public Key: ", "pk-abc"),
            ("Discord Bot Token (optional): ", "Bot.secret"),
            ("Discord Client Secret (optional): ", "client-secret"),
            ("Run Discord OAuth flow [y/N]: ", ""),
            ("New passphrase: ", env_pass),
            ("Confirm passphrase: ", env_pass),
        ])
    finally:
        os.environ["TARK_PLUGIN_PASSPHRASE"] = env_pass
    assert code == 0, output
    path = project / ".tark" / "plugins" / "discord" / "oauth.json"
    assert output.index("=== Plugin OAuth: discord ===") < output.index("Store plugin credentials in:\n"
                                                                        "  1) Global (default)\n"
                                                                        "  2) Project .tark (current directory)\n")
    assert "Discord configuration:" in output
    assert "Bot.secret" not in output and env_pass not in output  # hidden input
    assert output.rstrip().endswith(f"✅ Saved credentials to {path}")
    stored = reference_open(path.read_text(), env_pass)
    # tark's payload: the client secret is for the OAuth flow only; serde_json's map sorts the keys
    assert stored == '{"config":{"application_id":"123456789","bot_token":"Bot.secret","public_key":"pk-abc"}}'
    with Supervisor() as supervisor:  # what channel_auth_init received, from the plugin's own storage
        assert supervisor.call("discord", "got", []).output == stored


def test_passphrases_that_do_not_match_write_nothing(cli, installed: Path, project: Path, tark_argv) -> None:
    env_pass = os.environ.pop("TARK_PLUGIN_PASSPHRASE")
    try:
        code, output = converse([*tark_argv, "plugin", "auth", NAME], project, [
            ("Choose [1-2]: ", "2"), ("API key: ", "k"), ("Workspace (optional) [main]: ", ""),
            ("Run the OAuth flow [y/N]: ", "n"), ("New passphrase: ", "one"), ("Confirm passphrase: ", "two"),
        ])
    finally:
        os.environ["TARK_PLUGIN_PASSPHRASE"] = env_pass
    assert code == 1
    assert "Error: Passphrases do not match" in output
    assert not installed.parent.exists()


def test_an_encrypted_file_opens_with_a_passphrase_typed_on_the_terminal(cli, installed: Path, project: Path,
                                                                          tark_argv) -> None:
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=t", "--no-oauth").exit_code == 0
    env_pass = os.environ.pop("TARK_PLUGIN_PASSPHRASE")
    try:
        code, output = converse([*tark_argv, "channel", "send", NAME, "hi", "--conversation", "c", "--json"],
                                project, [(f"Passphrase for {installed}: ", env_pass)])
    finally:
        os.environ["TARK_PLUGIN_PASSPHRASE"] = env_pass
    assert code == 0, output
    document = json.loads(output[output.index("{"):])
    assert unhex(document["message_ids"][0]) == '{"config":{"api_key":"t","workspace":"main"}}'


# ------------------------------------------------------------------------------------------ tark auth status

def test_auth_status_lists_channels_and_where_their_credentials_are(cli, installed: Path) -> None:
    before = cli("auth", "status")
    assert before.exit_code == 0, before.output
    assert ("❌ credentials - Credentials channel (channel plugin credentials-channel)\n"
            "     Credentials: none (configure with: tark plugin auth credentials-channel)\n") in before.output
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k-secret-1", "--no-oauth").exit_code == 0
    after = cli("auth", "status")
    assert ("✅ credentials - Credentials channel (channel plugin credentials-channel)\n"
            f"     Credentials: {installed} (project, encrypted)\n") in after.output
    assert PASS not in after.output and "k-secret-1" not in after.output
    (document,) = json.loads(cli("auth", "status", "--json").output)
    assert document == {"plugin": NAME, "type": "channel", "channels": ["credentials"],
                        "display_name": "Credentials channel", "oauth_flow": "pkce",
                        "credentials_path": str(installed), "scope": "project", "has_credentials": True,
                        "encrypted": True, "problems": []}


# ------------------------------------------------------------------------------------------ with an OAuth flow

def test_oauth_tokens_are_stored_with_the_settings_and_reach_the_plugin(cli, project: Path, tmp_path: Path,
                                                                        tark_argv) -> None:
    """tark's `{"config":..,"tokens":..}`: the settings plus the token response (sorted, with expires_at), from a
    real PKCE sign-in against a local authorization server."""
    source = tmp_path / "oauth-src"
    shutil.copytree(EXAMPLE, source)
    with OAuthServer() as server:
        manifest = (source / "plugin.toml").read_text().split("\n[oauth]\n")[0] + (
            "\n"
            f'[oauth]\nflow = "pkce"\nauth_url = "{server.url}/authorize"\ntoken_url = "{server.url}/token"\n'
            f'client_id = "{CLIENT_ID}"\nscopes = ["chat"]\nredirect_uri = "http://127.0.0.1:{free_port()}/cb"\n')
        (source / "plugin.toml").write_text(manifest)
        assert cli("plugin", "add", "--yes", str(source)).exit_code == 0
        process = subprocess.Popen([*tark_argv, "plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k",
                                    "--oauth", "--no-browser", "--timeout", "30"], cwd=project, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith(f"{server.url}/authorize?"):
                    break
            assert lines, process.communicate(timeout=30)
            page = httpx.get(lines[-1], follow_redirects=True, timeout=30)
            assert page.status_code == 200
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, err
        (issued,) = server.issued
    path = project / ".tark" / "plugins" / NAME / "oauth.json"
    assert out.rstrip().endswith(f"✅ Saved credentials to {path}")
    stored = json.loads(reference_open(path.read_text(), PASS))
    assert stored["config"] == {"api_key": "k", "workspace": "main"}
    expires_at = stored["tokens"].pop("expires_at")
    assert stored["tokens"] == issued and isinstance(expires_at, int | float)
    assert list(stored) == ["config", "tokens"]
    assert send(cli) == reference_open(path.read_text(), PASS)


def test_a_symlinked_project_tree_is_never_written_through_or_read(cli, installed: Path, project: Path,
                                                                   tmp_path: Path) -> None:
    """A checked-out repository ships `.tark/plugins/<id>` as a symlink to another directory, or `oauth.json` as a
    symlink to a private file: tark plugin auth does not write there, and channels do not read the target."""
    elsewhere = tmp_path / "victim"
    elsewhere.mkdir()
    (elsewhere / "oauth.json").write_text("victim's file")
    (project / ".tark" / "plugins").mkdir(parents=True)
    (project / ".tark" / "plugins" / NAME).symlink_to(elsewhere)
    done = cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=k", "--no-oauth", "--replace")
    assert done.exit_code == 1
    assert f"{project / '.tark' / 'plugins' / NAME} is a symbolic link" in done.output
    assert [p.name for p in elsewhere.iterdir()] == ["oauth.json"]
    assert (elsewhere / "oauth.json").read_text() == "victim's file"

    (project / ".tark" / "plugins" / NAME).unlink()
    secret = tmp_path / "private.json"
    secret.write_text('{"config":{"api_key":"someone else\'s"}}')
    installed.parent.mkdir()
    installed.symlink_to(secret)
    done = cli("channel", "send", NAME, "hi", "--conversation", "c1")
    assert done.exit_code == 1
    assert f"cannot read credentials {installed}" in done.output


def test_discords_oauth_flow_uses_the_application_id_and_client_secret(cli, project: Path, tmp_path: Path,
                                                                        tark_argv) -> None:
    """tark: the Application ID is the OAuth client id (the manifest's `${DISCORD_CLIENT_ID}` may stay unset) and
    the Client Secret goes to the token request only; neither secret is stored."""
    source = tmp_path / "discord-src"
    make_guest(source, DISCORD_PROBE, name="discord", type="channel", capabilities="storage = true")
    with OAuthServer() as server:
        with open(source / "plugin.toml", "a") as manifest:
            manifest.write(f'[oauth]\nflow = "pkce"\nauth_url = "{server.url}/authorize"\n'
                           f'token_url = "{server.url}/token"\nclient_id = "${{DISCORD_CLIENT_ID}}"\n'
                           f'scopes = ["bot"]\nredirect_uri = "http://127.0.0.1:{free_port()}/callback"\n')
        assert cli("plugin", "add", "--yes", str(source)).exit_code == 0
        process = subprocess.Popen([*tark_argv, "plugin", "auth", "discord", "--stdin", "--oauth", "--no-browser",
                                    "--timeout", "30", "--json"], cwd=project, text=True, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        try:
            assert process.stdin is not None and process.stderr is not None
            process.stdin.write(json.dumps({"application_id": CLIENT_ID, "public_key": "pk",
                                            "client_secret": "cs-1"}))
            process.stdin.close()
            for line in process.stderr:  # with --json, progress goes to stderr
                if line.startswith(f"{server.url}/authorize?"):
                    assert httpx.get(line.strip(), follow_redirects=True, timeout=30).status_code == 200
                    break
            assert process.stdout is not None
            out, err = process.stdout.read(), process.stderr.read()
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, err
        (authorize,) = server.requests_to("/authorize")
        (token,) = server.requests_to("/token")
        (issued,) = server.issued
    assert authorize.params["client_id"] == CLIENT_ID and token.params["client_secret"] == "cs-1"
    document = json.loads(out)
    assert (document["oauth"], document["settings"]) == (True, ["application_id", "public_key"])
    stored = json.loads(reference_open(Path(document["path"]).read_text(), PASS))
    assert stored["config"] == {"application_id": CLIENT_ID, "public_key": "pk"}
    assert stored["tokens"]["access_token"] == issued["access_token"]
    assert "cs-1" not in json.dumps(stored)


def test_logout_of_a_channel_removes_this_projects_file_and_the_global_one(cli, installed: Path) -> None:
    assert cli("plugin", "auth", NAME, "--set", "api_key=g", "--no-oauth").exit_code == 0
    assert cli("plugin", "auth", NAME, "--scope", "project", "--set", "api_key=p", "--no-oauth").exit_code == 0
    global_path = Path(os.environ["TARK_CONFIG_DIR"]) / f"{NAME}_oauth.json"
    done = cli("auth", "logout", NAME)
    assert done.exit_code == 0, done.output
    assert done.output == (f"✅ Cleared {NAME} OAuth credentials\n   Deleted: {global_path}\n"
                           f"   Deleted: {installed}\n")
    assert not global_path.exists() and not installed.exists()
    assert cli("channel", "send", NAME, "hi", "--conversation", "c1").exit_code == 1  # nothing left to hand over
