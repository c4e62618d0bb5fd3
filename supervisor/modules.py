"""Compiles plugin wasm in the supervisor and keeps the serialized modules workers load (fixes weakness 8).

Artifacts are keyed by the wasm's sha256, the wasmtime version and the engine settings, so a restart reuses them
and a changed binary or config never loads a stale one. Only the supervisor writes this cache: deserializing
bytes is only safe for artifacts we produced.
"""

from __future__ import annotations

import hashlib
import os
import importlib.metadata
import threading
from pathlib import Path
from typing import Iterator

import attrs
import wasmtime

from worker.protocol import EngineSettings, build_engine_config
from supervisor.atomic_file import write_atomically

WASMTIME_VERSION = importlib.metadata.version("wasmtime")


class ModuleCompileError(Exception):
    """The plugin's wasm could not be read or compiled."""


@attrs.frozen
class ExportSignature:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __iter__(self) -> Iterator[tuple[str, ...]]:  # `params, results = exports[name]`
        return iter((self.params, self.results))


class ModuleCache:
    def __init__(self, cache_dir: Path, settings: EngineSettings = EngineSettings()) -> None:
        self._dir = Path(cache_dir) / "modules"
        self.settings = settings
        self._engine = wasmtime.Engine(build_engine_config(settings))
        self._settings_hash = hashlib.sha256(settings.cache_key().encode()).hexdigest()[:16]
        self._exports: dict[tuple, dict[str, ExportSignature]] = {}
        self._lock = threading.Lock()

    def artifact_for(self, wasm_path: Path, name: str | None = None) -> Path:
        """The serialized module for `wasm_path`, compiling it on first use."""
        wasm = _read_wasm(wasm_path)
        artifact = self._artifact_path(wasm)
        if artifact.is_file():
            return artifact
        module = self._compile(wasm, name or Path(wasm_path).name)
        self._write_atomically(artifact, bytes(module.serialize()))
        return artifact

    def exports(self, wasm_path: Path, name: str | None = None) -> dict[str, ExportSignature]:
        """Exported function name -> signature, read in the supervisor (never trusting a worker's word).

        Cached by file identity, so a call does not re-read and re-hash the wasm; an install or update replaces
        the file (new inode), an edit in place changes its size or mtime."""
        key = _file_identity(wasm_path)
        with self._lock:
            cached = self._exports.get(key)
        if cached is not None:
            return cached
        artifact = self.artifact_for(wasm_path, name)
        module = wasmtime.Module.deserialize_file(self._engine, str(artifact))
        found: dict[str, ExportSignature] = {}
        for export in module.exports:
            ty = export.type
            if isinstance(ty, wasmtime.FuncType):
                found[export.name] = ExportSignature(
                    tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)
                )
        with self._lock:
            self._exports[key] = found
        return found

    def _artifact_path(self, wasm: bytes) -> Path:
        digest = hashlib.sha256(wasm).hexdigest()
        return self._dir / f"{digest}-{WASMTIME_VERSION}-{self._settings_hash}.cwasm"

    def _compile(self, wasm: bytes, name: str) -> wasmtime.Module:
        try:
            return wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ModuleCompileError(f"Failed to compile WASM: {name}: {reason}") from None

    def _write_atomically(self, target: Path, data: bytes) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(target, data)


def _file_identity(wasm_path: Path) -> tuple:
    try:
        st = os.stat(wasm_path)
    except OSError as exc:
        raise ModuleCompileError(f"Failed to read WASM: {wasm_path}: {exc.strerror}") from None
    return (os.path.realpath(wasm_path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_wasm(wasm_path: Path) -> bytes:
    try:
        return Path(wasm_path).read_bytes()
    except OSError as exc:
        raise ModuleCompileError(f"Failed to read WASM: {wasm_path}: {exc.strerror}") from None
