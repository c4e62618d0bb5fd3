"""Where a plugin's OAuth credentials live, and writing them safely (0600 from creation, atomic replace).

Location (tark's rule): the manifest's `[oauth] credentials_path` (`~` expanded, `${VAR}` expanded at use time),
else `<config dir>/<id>_oauth.json` (`~/.config/tark/<id>_oauth.json`). A credentials_path is a grant: the
plugin's own location unless the admin policy allows more, never a file another plugin or tark's defaults use
(docs/permissions.md). The supervisor hands the text to the plugin's auth-init export; the fs capability refuses
every credentials file to every plugin except a plugin's own file when its own fs_read names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator, Mapping

from policy.admin_policy import AdminPolicyError
from policy.grants import credentials_path_refusal

from supervisor import paths
from supervisor.atomic_file import write_atomically
from supervisor.consent.policy_file import PolicyLoader
from supervisor.plugin import InstalledPlugin

MAX_CREDENTIALS_BYTES = 256 * 1024


class CredentialsError(Exception):
    """Credentials that cannot be read or written."""


def declared_credentials_path(plugin: InstalledPlugin, environ: Mapping[str, str] | None = None) -> Path:
    """Where the manifest says the credentials live (shape-checked, not yet checked against other plugins and
    the admin policy). Every such path is protected from fs_read (supervisor/oauth/private_paths.py)."""
    oauth = plugin.manifest.oauth
    if oauth is not None and oauth.credentials_path:
        expanded = oauth.expanded(os.environ if environ is None else environ).credentials_path
        if "${" in expanded:
            raise CredentialsError(
                f"OAuth config has unresolved environment placeholders: credentials_path ({expanded})"
            )
        return _checked_custom_path(Path(os.path.expanduser(expanded)), expanded)
    return default_credentials_path(plugin.name)


def default_credentials_path(name: str) -> Path:
    return paths.config_dir() / f"{name}_oauth.json"


def credentials_path(plugin: InstalledPlugin, environ: Mapping[str, str] | None = None) -> Path:
    """The credentials file `tark auth` writes and tark hands to the plugin. A manifest's credentials_path is a
    grant (policy.grants.credentials_path_refusal): only the plugin's own location unless the admin allows more,
    and never a file tark's defaults or another plugin's manifest use."""
    path = declared_credentials_path(plugin, environ)
    oauth = plugin.manifest.oauth
    if oauth is None or not oauth.credentials_path:
        return path
    try:
        policy = PolicyLoader().current()
    except AdminPolicyError as exc:
        raise CredentialsError(f"cannot check credentials_path against the admin policy: {exc}") from None
    refusal = credentials_path_refusal(
        os.path.normpath(path), plugin=plugin.name, config_dir=os.path.normpath(paths.config_dir()),
        data_root=os.path.normpath(paths.data_root()), home=os.path.expanduser("~"),
        others=_other_declared_paths(plugin.name, environ),
        admin_allowed=policy.allow.credentials_path or ())
    if refusal is not None:
        raise CredentialsError(f"credentials_path '{oauth.credentials_path}' of plugin '{plugin.name}' is refused: "
                               f"{refusal}")
    return path


def _other_declared_paths(name: str, environ: Mapping[str, str] | None) -> dict[str, str]:
    from supervisor.registry import Registry, RegistryError  # the registry imports plugin loading, not us

    try:
        plugins = Registry(paths.plugins_dir()).list().plugins
    except (RegistryError, OSError):
        plugins = ()
    found = {}
    for other in plugins:
        if other.name == name:
            continue
        try:
            found[other.name] = os.path.normpath(declared_credentials_path(other, environ))
        except CredentialsError:
            continue
    return found


def _checked_custom_path(path: Path, written: str) -> Path:
    """A manifest chooses where `tark auth` writes: keep that to a .json file in the user's home or tark's config
    dir, outside tark's data root, so a hostile manifest cannot make tark overwrite arbitrary files."""
    fix = 'use a path like "~/.config/<app>/oauth.json" or remove credentials_path'
    if not path.is_absolute() or ".." in path.parts:
        raise CredentialsError(f"credentials_path '{written}' must be absolute (or start with ~/) without '..'; {fix}")
    if path.suffix != ".json":
        raise CredentialsError(f"credentials_path '{written}' must name a .json file; {fix}")
    allowed = (Path(os.path.expanduser("~")), paths.config_dir())
    if not any(path.is_relative_to(root) for root in allowed) or path.is_relative_to(paths.data_root()):
        raise CredentialsError(
            f"credentials_path '{written}' must be inside your home directory or {paths.config_dir()}, "
            f"and outside tark's data directory {paths.data_root()}; {fix}"
        )
    return path


def load_credentials(plugin: InstalledPlugin, environ: Mapping[str, str] | None = None) -> str | None:
    """The stored credentials text, or None when the plugin has none."""
    path = credentials_path(plugin, environ)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CREDENTIALS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials {path}: {exc.strerror}") from None
    return credentials_text(path, data)


def credentials_text(path: Path, data: bytes) -> str:
    """The text of credentials read from `path`: at most MAX_CREDENTIALS_BYTES, UTF-8."""
    if len(data) > MAX_CREDENTIALS_BYTES:
        raise CredentialsError(f"credentials file {path} is larger than {MAX_CREDENTIALS_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None


def save_credentials(plugin: InstalledPlugin, text: str, environ: Mapping[str, str] | None = None) -> Path:
    """Write atomically: a 0600 temporary file in the same directory, fsync, rename over the target. The file's
    identity is recorded, so `tark auth logout` later deletes only a file tark wrote for this plugin."""
    path = credentials_path(plugin, environ)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _written_records() as records:
        write_atomically(path, text.encode("utf-8"))
        st = os.stat(path)
        records.setdefault(plugin.name, {})[str(path)] = [st.st_dev, st.st_ino]
    return path


def delete_credentials(plugin: InstalledPlugin, environ: Mapping[str, str] | None = None) -> Path | None:
    """Remove the stored credentials; returns the path removed, or None when there was nothing.

    tark's default file of this plugin is always removed (tark writes it too). A manifest's own credentials_path
    is removed only when tark wrote that very file (same inode) for this plugin: a manifest naming someone
    else's file cannot make `tark auth logout` delete it."""
    path = credentials_path(plugin, environ)
    with _written_records() as records:
        mine = records.get(plugin.name, {})
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            mine.pop(str(path), None)
            return None
        if path != default_credentials_path(plugin.name) and mine.get(str(path)) != [st.st_dev, st.st_ino]:
            raise CredentialsError(f"{path} was not written by tark for plugin '{plugin.name}', so it is not "
                                   "deleted; remove it yourself if it is yours")
        path.unlink()
        mine.pop(str(path), None)
    return path


WRITTEN_RECORDS = "credentials-written.json"


@contextlib.contextmanager
def _written_records() -> Iterator[dict[str, dict[str, list[int]]]]:
    """`<data root>/credentials-written.json`: plugin -> {path: [device, inode]} of files tark wrote, edited under
    an exclusive lock."""
    root = paths.data_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = root / WRITTEN_RECORDS
    fd = os.open(root / f".{WRITTEN_RECORDS}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            records = json.loads(target.read_text(encoding="utf-8"))
            if not isinstance(records, dict):
                records = {}
        except (FileNotFoundError, ValueError):
            records = {}
        before = json.dumps(records, sort_keys=True)
        yield records
        after = json.dumps(records, sort_keys=True)
        if after != before:
            write_atomically(target, after.encode("utf-8"))
    finally:
        os.close(fd)
