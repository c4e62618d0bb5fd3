"""Which credentials file a channel operation opens, and that an unchanged encrypted file is not run through
Argon2 again on every operation (a daemon's webhooks reuse one CredentialsSource per channel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import envelope
from supervisor.channel_credentials import (CredentialsSource, NoPassphrase, environment_passphrase, locate,
                                            project_credentials_path)
from supervisor.credentials import default_credentials_path
from supervisor.plugin import load_plugin_dir


@pytest.fixture
def plugin(tmp_path: Path):
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "plugin.toml").write_text('[plugin]\nname = "chan"\nversion = "0.1.0"\ntype = "channel"\n')
    (directory / "plugin.wasm").write_bytes(b"\0asm\1\0\0\0")
    return load_plugin_dir(directory)


def test_the_project_file_is_used_first_then_the_global_one(plugin, tmp_path: Path) -> None:
    project = tmp_path / "project"
    assert locate(plugin, project) is None
    global_path = default_credentials_path("chan")
    global_path.parent.mkdir(parents=True)
    global_path.write_text("{}")
    assert locate(plugin, project) is not None and locate(plugin, project).scope == "global"
    local = project_credentials_path(project, "chan")
    local.parent.mkdir(parents=True)
    local.write_text("{}")
    assert (locate(plugin, project).path, locate(plugin, project).scope) == (local, "project")
    assert locate(plugin, None).scope == "global"  # no project: global only


def test_an_unchanged_encrypted_file_is_decrypted_once(plugin, tmp_path: Path) -> None:
    project = tmp_path / "project"
    local = project_credentials_path(project, "chan")
    local.parent.mkdir(parents=True)
    local.write_text(envelope.encrypt('{"config":{"a":"1"}}', "pw"))
    asked: list[Path] = []

    def passphrase(path: Path) -> str:
        asked.append(path)
        return "pw"

    source = CredentialsSource(project, passphrase)
    assert source.load(plugin) == source.load(plugin) == '{"config":{"a":"1"}}'
    assert asked == [local]
    local.write_text(envelope.encrypt('{"config":{"a":"2"}}', "pw"))
    assert source.load(plugin) == '{"config":{"a":"2"}}'
    assert asked == [local, local]


def test_without_a_passphrase_the_error_names_the_file_and_the_variable(plugin, tmp_path: Path) -> None:
    project = tmp_path / "project"
    local = project_credentials_path(project, "chan")
    local.parent.mkdir(parents=True)
    local.write_text(envelope.encrypt("x", "pw"))
    with pytest.raises(NoPassphrase, match=f"{local} is encrypted: set TARK_PLUGIN_PASSPHRASE"):
        CredentialsSource(project, environment_passphrase(environ={})).load(plugin)
    assert CredentialsSource(project, environment_passphrase(environ={"TARK_PLUGIN_PASSPHRASE": "pw"})).load(plugin) == "x"
