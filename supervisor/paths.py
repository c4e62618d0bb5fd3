"""Where the supervisor keeps things on disk. Each function reads the environment when called (no globals).

platformdirs is imported only when no override answers: the thin CLI (docs/performance.md) usually finds its
runtime dir in XDG_RUNTIME_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """`$XDG_DATA_HOME/tark` (tark's data_local_dir), overridable with TARK_DATA_DIR."""
    override = os.environ.get("TARK_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("tark", appauthor=False))


def plugins_dir() -> Path:
    return data_root() / "plugins"


def config_dir() -> Path:
    override = os.environ.get("TARK_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("tark", appauthor=False))


def cache_dir() -> Path:
    override = os.environ.get("TARK_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("tark", appauthor=False))


def runtime_dir() -> Path:
    """Private directory (0700) for ZeroMQ endpoints and the daemon's control socket."""
    override = os.environ.get("TARK_RUNTIME_DIR")
    if override:
        path = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "tark"
    else:
        path = data_root() / "run"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path

