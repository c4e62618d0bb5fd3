"""An installed plugin as the supervisor sees it: its directory, manifest, status and install record."""

from __future__ import annotations

import stat
from pathlib import Path

import attrs

from policy.manifest import Manifest, parse_manifest

MANIFEST_FILE = "plugin.toml"
DISABLED_MARKER = ".disabled"
INSTALL_RECORD = ".install.json"
DATA_DIR = "data"


class PluginLoadError(Exception):
    """An installed plugin directory that cannot be loaded (bad manifest, missing wasm)."""


@attrs.frozen
class InstalledPlugin:
    directory: Path
    manifest: Manifest
    warnings: tuple[str, ...] = ()
    # (device, inode, size, mtime) of the wasm when loaded: an update that keeps the manifest but replaces the
    # module still makes a different InstalledPlugin, so a running worker of the old one is replaced.
    wasm_identity: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def enabled(self) -> bool:
        return not (self.directory / DISABLED_MARKER).exists()

    @property
    def wasm_path(self) -> Path:
        return self.directory / self.manifest.plugin.wasm

    @property
    def data_dir(self) -> Path:
        return self.directory / DATA_DIR

    @property
    def install_record_path(self) -> Path:
        return self.directory / INSTALL_RECORD


def load_plugin_dir(directory: Path) -> InstalledPlugin:
    """Read and validate `directory/plugin.toml` and check that the declared wasm file exists."""
    manifest_path = directory / MANIFEST_FILE
    try:
        text = manifest_path.read_bytes()
    except FileNotFoundError:
        raise PluginLoadError(
            f"No plugin.toml found in {directory}\nMake sure the path contains a valid plugin."
        ) from None
    except OSError as exc:
        raise PluginLoadError(f"Failed to read manifest: {manifest_path}: {exc.strerror}") from None
    parsed = parse_manifest(text, str(manifest_path))
    wasm = directory / parsed.manifest.plugin.wasm
    try:
        st = wasm.stat()
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise PluginLoadError(
            f"Failed to load plugin: file not found: {wasm}\n"
            f"WASM module not found: {parsed.manifest.plugin.wasm} (declared in {manifest_path})\n"
            "Did you forget to build the plugin?"
        )
    return InstalledPlugin(directory=directory, manifest=parsed.manifest, warnings=parsed.warnings,
                           wasm_identity=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
