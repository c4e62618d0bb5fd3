"""Where a plugin's OAuth credentials live, and writing them safely (0600 from creation, atomic replace).

Location (tark's rule): the manifest's `[oauth] credentials_path` (`~` expanded, `${VAR}` expanded at use time),
else `<config dir>/<id>_oauth.json` (`~/.config/tark/<id>_oauth.json`). Plugins never read these files
themselves: the supervisor hands the text to the plugin's auth-init export, and the fs capability refuses
tark's own directories to every plugin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from supervisor import paths
from supervisor.atomic_file import write_atomically
from supervisor.plugin import InstalledPlugin

MAX_CREDENTIALS_BYTES = 256 * 1024


class CredentialsError(Exception):
    """Credentials that cannot be read or written."""


def credentials_path(plugin: InstalledPlugin, environ: Mapping[str, str] | None = None) -> Path:
    oauth = plugin.manifest.oauth
    if oauth is not None and oauth.credentials_path:
        expanded = oauth.expanded(os.environ if environ is None else environ).credentials_path
        if "${" in expanded:
            raise CredentialsError(
                f"OAuth config has unresolved environment placeholders: credentials_path ({expanded})"
            )
        return _checked_custom_path(Path(os.path.expanduser(expanded)), expanded)
    return paths.config_dir() / f"{plugin.name}_oauth.json"


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
    if len(data) > MAX_CREDENTIALS_BYTES:
        raise CredentialsError(f"credentials file {path} is larger than {MAX_CREDENTIALS_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None


def save_credentials(plugin: InstalledPlugin, text: str, environ: Mapping[str, str] | None = None) -> Path:
    """Write atomically: a 0600 temporary file in the same directory, fsync, rename over the target."""
    path = credentials_path(plugin, environ)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, text.encode("utf-8"))
    return path


def delete_credentials(plugin: InstalledPlugin, environ: Mapping[str, str] | None = None) -> Path | None:
    """Remove the stored credentials; returns the path removed, or None when there was nothing."""
    path = credentials_path(plugin, environ)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
