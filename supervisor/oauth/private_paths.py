"""Paths no plugin may read whatever its fs_read says: tark's own directories, every plugin's OAuth
credentials file and every project's `.tark/plugins/` tree (a plugin gets its own credentials only through its
auth-init export)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from supervisor import paths
from supervisor.channel_credentials import PROJECT_DIR
from supervisor.credentials import CredentialsError, declared_credentials_path
from supervisor.registry import Registry, RegistryError

_log = logging.getLogger(__name__)


def private_paths() -> tuple[str, ...]:
    """Canonical paths; each protects itself and everything beneath it. Read afresh on every call, so a plugin
    installed (or a credentials_path changed) after a worker started is covered at once."""
    found = [paths.data_root(), paths.config_dir(), paths.cache_dir(), paths.runtime_dir(),
             Path.cwd() / PROJECT_DIR / "plugins"]  # any other project's .tark/plugins: policy.grants.is_private
    try:
        plugins = Registry(paths.plugins_dir()).list().plugins
    except (RegistryError, OSError) as exc:
        _log.warning("cannot list plugins to protect their credentials files: %s", exc)
        plugins = ()
    for plugin in plugins:
        if plugin.manifest.oauth is None or not plugin.manifest.oauth.credentials_path:
            continue  # the default location is under config_dir
        try:
            found.append(declared_credentials_path(plugin))
        except CredentialsError:
            continue  # unresolved placeholder: nothing can be stored there either
    return tuple(os.path.realpath(p) for p in found)


def is_private(canonical_path: str, private: tuple[str, ...]) -> bool:
    return any(canonical_path == p or canonical_path.startswith(p.rstrip("/") + "/") for p in private)
