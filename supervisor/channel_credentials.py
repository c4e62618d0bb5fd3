"""Channel credentials: where `tark plugin auth` keeps them and how they are opened for `channel_auth_init`
(docs/channels.md, "Credentials").

Two places, as in tark: global (the plugin's credentials path, `~/.config/tark/<id>_oauth.json` by default) and
project-local `<project>/.tark/plugins/<id>/oauth.json`. The project file wins when it exists. Either may be
encrypted with tark's envelope (supervisor/envelope.py); a plaintext file is handed over as it is. Unlike tark,
the project file is decrypted too (tark passes it undecrypted). The passphrase is asked for only when the file
found is encrypted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Literal

import attrs

from supervisor import envelope
from supervisor.atomic_file import read_no_follow, write_atomically
from supervisor.credentials import (
    MAX_CREDENTIALS_BYTES,
    CredentialsError,
    credentials_path,
    credentials_text,
    save_credentials,
)
from supervisor.plugin import InstalledPlugin

PASSPHRASE_ENV = "TARK_PLUGIN_PASSPHRASE"
PROJECT_DIR = ".tark"
FILE_NAME = "oauth.json"

Scope = Literal["global", "project"]
Passphrase = Callable[[Path], str]  # asked with the path of the encrypted file it must open


class PassphraseRejected(CredentialsError):
    """The passphrase does not open the file (or the file was altered)."""


class CorruptCredentials(CredentialsError):
    """A credentials file that looks encrypted but cannot be parsed."""


class NoPassphrase(CredentialsError):
    """The file is encrypted and there is no way to ask for its passphrase."""


def project_plugin_dir(project: Path, name: str) -> Path:
    return project / PROJECT_DIR / "plugins" / name


def project_credentials_path(project: Path, name: str) -> Path:
    return project_plugin_dir(project, name) / FILE_NAME


def project_data_dir(project: Path, name: str) -> Path:
    return project_plugin_dir(project, name) / "data"


def storage_path(plugin: InstalledPlugin, scope: Scope, project: Path) -> Path:
    return project_credentials_path(project, plugin.name) if scope == "project" else credentials_path(plugin)


@attrs.frozen
class Located:
    path: Path
    scope: Scope


def locate(plugin: InstalledPlugin, project: Path | None) -> Located | None:
    """The credentials file a channel operation uses: the project's, else the global one; None when neither
    exists."""
    if project is not None:
        local = project_credentials_path(project, plugin.name)
        if os.path.lexists(local):
            return Located(local, "project")
    path = credentials_path(plugin)
    return Located(path, "global") if os.path.lexists(path) else None


def read_text(path: Path) -> str:
    """A credentials file's text: a regular file (no symlink), at most MAX_CREDENTIALS_BYTES, UTF-8."""
    try:
        found = read_no_follow(path, MAX_CREDENTIALS_BYTES)
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials {path}: {exc.strerror or exc}") from None
    if found is None:
        raise CredentialsError(f"credentials file {path} does not exist")
    info, data = found
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"credentials file {path} is not a regular file")
    return credentials_text(path, data)


def open_text(text: str, path: Path, passphrase: Passphrase) -> str:
    """The plaintext of a credentials file's `text` (decrypted when it is an envelope)."""
    if not envelope.looks_encrypted(text):
        return text
    try:
        return envelope.decrypt(text, passphrase(path), str(path))
    except envelope.WrongPassphrase as exc:
        raise PassphraseRejected(str(exc)) from None
    except envelope.CorruptEnvelope as exc:
        raise CorruptCredentials(str(exc)) from None


@attrs.define
class CredentialsSource:
    """Where one caller's channel operations take credentials from: the project directory looked at first (None:
    global only) and how to get a passphrase. Remembers the last file opened, so an unchanged encrypted file is
    not run through Argon2 again on every operation."""

    project: Path | None
    passphrase: Passphrase = attrs.field(repr=False)
    _last: tuple[Path, str, str] | None = attrs.field(default=None, repr=False)

    def load(self, plugin: InstalledPlugin) -> str | None:
        located = locate(plugin, self.project)
        if located is None:
            return None
        text = read_text(located.path)
        if self._last is not None and self._last[:2] == (located.path, text):
            return self._last[2]
        plaintext = open_text(text, located.path, self.passphrase)
        self._last = (located.path, text, plaintext)
        return plaintext


def environment_passphrase(environ: dict[str, str] | None = None, given: str | None = None) -> Passphrase:
    """A passphrase from `given`, else TARK_PLUGIN_PASSPHRASE; no prompt (daemons and scripts)."""
    env = os.environ if environ is None else environ

    def passphrase(path: Path) -> str:
        if given:
            return given
        value = env.get(PASSPHRASE_ENV)
        if value is None:
            raise NoPassphrase(f"{path} is encrypted: set {PASSPHRASE_ENV} (or run the command on a terminal "
                               "to be asked for the passphrase)")
        return value

    return passphrase


def default_source() -> CredentialsSource:
    return CredentialsSource(Path.cwd(), environment_passphrase())


def save(plugin: InstalledPlugin, scope: Scope, project: Path, plaintext: str, passphrase: str) -> Path:
    """Encrypt `plaintext` with tark's envelope and write it where `scope` says: 0600 from creation, atomic
    replace; the project's `.tark/plugins/<id>/` directories are made 0700."""
    text = envelope.encrypt(plaintext, passphrase)
    if scope == "global":
        return save_credentials(plugin, text)
    path = project_credentials_path(project, plugin.name)
    for directory in (project / PROJECT_DIR, path.parent.parent, path.parent):
        # a checked-out repository may ship `.tark/...` as a symlink elsewhere: never write through one
        if directory.is_symlink():
            raise CredentialsError(f"{directory} is a symbolic link; credentials are not written through it "
                                   "(remove it, or use --scope global)")
        directory.mkdir(mode=0o700, exist_ok=True)
        if not directory.is_dir() or directory.is_symlink():
            raise CredentialsError(f"{directory} is not a directory")
    write_atomically(path, text.encode("utf-8"))
    return path


def delete_project_credentials(plugin: InstalledPlugin, project: Path) -> Path | None:
    """Remove `<project>/.tark/plugins/<id>/oauth.json` (the link itself if it is one); None when absent."""
    path = project_credentials_path(project, plugin.name)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


@attrs.frozen
class StoredState:
    """What `tark auth status` says of a channel's credentials, without opening them (no passphrase needed)."""

    path: Path | None  # the file a channel operation would use, else where `tark plugin auth` writes by default
    scope: Scope | None  # None: nothing stored
    encrypted: bool | None
    problem: str | None


def stored_state(plugin: InstalledPlugin, project: Path | None) -> StoredState:
    try:
        located = locate(plugin, project)
        if located is None:
            return StoredState(credentials_path(plugin), None, None, None)
        text = read_text(located.path)
    except CredentialsError as exc:
        return StoredState(None, None, None, str(exc))
    return StoredState(located.path, located.scope, envelope.looks_encrypted(text), None)
