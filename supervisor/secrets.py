"""Per-plugin secrets: values a plugin reads through `tark:env.get` instead of the supervisor's environment.

Stored by the supervisor in `<data root>/secrets/<plugin>.json` (directory 0700, files 0600, written atomically),
never in the plugin's own directory, and never readable through fs_read (the data root is private). Each plugin
has its own file, so one plugin never sees another's secret. Readers check the file's identity (inode, size,
mtime) on every lookup, so a `tark plugin secret set` reaches a running daemon's next env.get without a restart.
See docs/secrets-and-audit.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from pathlib import Path
from typing import Iterator

from supervisor import paths
from supervisor.atomic_file import read_no_follow, write_atomically

SECRETS_DIR = "secrets"
MAX_VALUE_BYTES = 64 * 1024
MAX_KEY_CHARS = 256
MAX_FILE_BYTES = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLUGIN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class SecretError(Exception):
    """A secret operation the user can fix (bad key, empty value, unknown secret, unreadable store)."""


def default_secrets_dir() -> Path:
    return paths.data_root() / SECRETS_DIR


def validate_key(key: str) -> None:
    if len(key) > MAX_KEY_CHARS or not _KEY.match(key):
        raise SecretError(f"Invalid secret name {key[:80]!r}: use an environment variable name "
                          f"(letters, digits and _, not starting with a digit, at most {MAX_KEY_CHARS} characters)")


def validate_value(value: str) -> None:
    if not value:
        raise SecretError("The secret's value is empty; to remove a secret use 'tark plugin secret unset'")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise SecretError(f"The secret's value is {size} bytes, more than the {MAX_VALUE_BYTES}-byte limit")
    if "\x00" in value:
        raise SecretError("The secret's value contains a NUL character")


def _plugin_file(directory: Path, plugin: str) -> Path:
    if not _PLUGIN.match(plugin):
        raise SecretError(f"Invalid plugin name {plugin[:80]!r}")
    return directory / f"{plugin}.json"


def _parse(raw: bytes, path: Path) -> dict[str, str]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise SecretError(f"{path} is not a JSON object of strings; fix or remove it")
    return data


def _read_private(path: Path) -> tuple[os.stat_result, dict[str, str]] | None:
    """The file's identity and content; None if it does not exist. Refuses a symlink or a file others can read."""
    try:
        found = read_no_follow(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror}") from None
    if found is None:
        return None
    info, raw = found
    if info.st_mode & 0o077 or info.st_uid != os.getuid():
        raise SecretError(f"{path} is readable or writable by others or not owned by this user; "
                          "it is not used (chmod 600 it, or unset and set the secrets again)")
    if len(raw) > MAX_FILE_BYTES:
        raise SecretError(f"{path} is larger than {MAX_FILE_BYTES} bytes; it is not used")
    return info, _parse(raw, path)


class SecretStore:
    """Set, unset and list the secrets of plugins (used by the CLI, possibly while a daemon reads them)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_secrets_dir()

    def keys(self, plugin: str) -> list[str]:
        found = _read_private(_plugin_file(self.directory, plugin))
        return sorted(found[1]) if found else []

    def set(self, plugin: str, key: str, value: str) -> None:
        validate_key(key)
        validate_value(value)
        with self._edit(plugin) as secrets:
            secrets[key] = value

    def unset(self, plugin: str, key: str) -> None:
        validate_key(key)
        with self._edit(plugin) as secrets:
            if key not in secrets:
                raise SecretError(f"Plugin '{plugin}' has no secret named {key}")
            del secrets[key]

    def forget(self, plugin: str) -> None:
        """Delete every secret of `plugin` (when it is removed)."""
        with self._locked():
            _plugin_file(self.directory, plugin).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _edit(self, plugin: str) -> Iterator[dict[str, str]]:
        path = _plugin_file(self.directory, plugin)
        with self._locked():
            found = _read_private(path)
            secrets = dict(found[1]) if found else {}
            yield secrets
            if secrets:
                data = json.dumps(secrets, sort_keys=True).encode("utf-8", "surrogatepass")
                if len(data) > MAX_FILE_BYTES:
                    raise SecretError(f"Plugin '{plugin}' would have more than {MAX_FILE_BYTES} bytes of secrets")
                write_atomically(path, data, mode=0o600)
            else:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class SecretReader:
    """One plugin's secrets as the env capability sees them; re-read when the file changes."""

    def __init__(self, plugin: str, directory: Path | None = None) -> None:
        self.plugin = plugin
        self._path = _plugin_file(directory or default_secrets_dir(), plugin)
        self._path_text = str(self._path)  # os.stat on a str skips the os.fspath round trip on every env.get
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int, int] | None = None
        self._secrets: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        """The secret's value, None when the plugin has no such secret. Raises SecretError if the file is bad."""
        with self._lock:
            # Most plugins have no secrets: os.access answers "no file" without the cost of raising an exception.
            if not os.access(self._path_text, os.F_OK, follow_symlinks=False):
                self._identity, self._secrets = None, {}
                return None
            try:
                info = os.stat(self._path_text, follow_symlinks=False)
            except FileNotFoundError:
                self._identity, self._secrets = None, {}
                return None
            identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if identity != self._identity:
                found = _read_private(self._path)
                if found is None:
                    self._identity, self._secrets = None, {}
                    return None
                opened, secrets = found
                self._identity = (opened.st_dev, opened.st_ino, opened.st_size, opened.st_mtime_ns)
                self._secrets = secrets
            return self._secrets.get(name)
