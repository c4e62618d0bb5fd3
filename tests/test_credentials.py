"""Where `tark auth` stores credentials: tark's default, or the manifest's credentials_path kept to safe places."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from policy.manifest import parse_manifest
from supervisor import paths
from supervisor.credentials import (
    CredentialsError,
    credentials_path,
    delete_credentials,
    load_credentials,
    save_credentials,
)
from supervisor.plugin import InstalledPlugin

OAUTH = """
[plugin]
name = "creds"
version = "0.1.0"
type = "provider"
[oauth]
flow = "pkce"
auth_url = "https://a/auth"
token_url = "https://a/token"
client_id = "c"
scopes = ["s"]
redirect_uri = "http://127.0.0.1:1/cb"
"""


def plugin_with(tmp_path: Path, credentials: str | None = None) -> InstalledPlugin:
    text = OAUTH + (f'credentials_path = "{credentials}"\n' if credentials else "")
    return InstalledPlugin(directory=tmp_path / "p", manifest=parse_manifest(text).manifest)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_default_location_is_tarks(tmp_path, home):
    assert credentials_path(plugin_with(tmp_path)) == paths.config_dir() / "creds_oauth.json"


def test_saved_credentials_are_0600_and_replace_atomically(tmp_path, home):
    plugin = plugin_with(tmp_path)
    path = save_credentials(plugin, '{"access_token":"one"}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_credentials(plugin, '{"access_token":"two"}')
    assert load_credentials(plugin) == '{"access_token":"two"}'
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert delete_credentials(plugin) == path and load_credentials(plugin) is None


def test_custom_path_outside_the_plugins_own_location_needs_the_admin(tmp_path, home, monkeypatch):
    monkeypatch.setenv("APP", "gemini")
    plugin = plugin_with(tmp_path, "~/.${APP}/oauth_creds.json")
    with pytest.raises(CredentialsError, match="outside the plugin's own credentials location"):
        credentials_path(plugin)
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\ncredentials_path = ["~/.gemini/oauth_creds.json"]\n')
    policy.chmod(0o600)
    monkeypatch.setenv("TARK_POLICY", str(policy))
    assert credentials_path(plugin) == home / ".gemini" / "oauth_creds.json"


def test_custom_path_inside_the_plugins_own_directory_needs_nobody(tmp_path, home):
    plugin = plugin_with(tmp_path, str(paths.config_dir() / "creds" / "token.json"))
    assert credentials_path(plugin) == paths.config_dir() / "creds" / "token.json"


@pytest.mark.parametrize("written", ["{config}/victim_oauth.json", "{config}/victim/token.json",
                                     "{config}/chatgpt_oauth.json"])
def test_a_manifest_cannot_name_another_plugins_credentials(tmp_path, home, written):
    """Attacker: credentials_path = tark's default file of another plugin, so `tark auth logout mine` deletes it
    and `tark chat --provider mine` feeds it to my auth-init."""
    plugin = plugin_with(tmp_path, written.format(config=paths.config_dir()))
    with pytest.raises(CredentialsError, match="credentials location for plugin"):
        credentials_path(plugin)


def test_a_manifest_cannot_name_the_file_another_installed_plugins_manifest_names(
        tmp_path, home, monkeypatch, cli, make_plugin_dir):
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\ncredentials_path = ["~/shared/*.json"]\n')
    policy.chmod(0o600)
    monkeypatch.setenv("TARK_POLICY", str(policy))
    victim = OAUTH.replace('name = "creds"', 'name = "victim"') + 'credentials_path = "~/shared/victim.json"\n'
    assert cli("plugin", "add", "--yes", str(make_plugin_dir(tmp_path / "victim", manifest=victim))).exit_code == 0
    with pytest.raises(CredentialsError, match="plugin 'victim' names the same file"):
        credentials_path(plugin_with(tmp_path, "~/shared/victim.json"))
    assert credentials_path(plugin_with(tmp_path, "~/shared/mine.json")) == home / "shared" / "mine.json"


def test_logout_deletes_only_files_tark_wrote_for_that_plugin(tmp_path, home, monkeypatch):
    """Attacker: credentials_path names a file the user keeps (allowed by a broad admin entry); logout must not
    delete it."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\ncredentials_path = ["~/*.json"]\n')
    policy.chmod(0o600)
    monkeypatch.setenv("TARK_POLICY", str(policy))
    precious = home / "wallet.json"
    precious.write_text('{"keep": true}')
    with pytest.raises(CredentialsError, match="not written by tark"):
        delete_credentials(plugin_with(tmp_path, "~/wallet.json"))
    assert precious.read_text() == '{"keep": true}'
    mine = plugin_with(tmp_path, "~/mine.json")
    written = save_credentials(mine, "{}")
    assert delete_credentials(mine) == written and not written.exists()


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("~/.bashrc", "must name a .json file"),
        ("/etc/tark.json", "inside your home directory"),
        ("~/../other/creds.json", "without '..'"),
        ("relative/creds.json", "must be absolute"),
        ("~/.${UNSET_VARIABLE_X}/creds.json", "unresolved environment placeholders"),
    ],
)
def test_unsafe_custom_paths_are_refused(tmp_path, home, written, message):
    with pytest.raises(CredentialsError, match=message.replace("(", r"\(")):
        credentials_path(plugin_with(tmp_path, written))


def test_custom_path_inside_tarks_data_dir_is_refused(tmp_path, home, monkeypatch):
    monkeypatch.setenv("TARK_DATA_DIR", str(home / "data"))
    with pytest.raises(CredentialsError, match="outside tark's data directory"):
        credentials_path(plugin_with(tmp_path, "~/data/plugins/other/data/x.json"))
    assert os.listdir(home) == []
