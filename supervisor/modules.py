"""Compiles plugin wasm in the supervisor and keeps the serialized modules workers load (fixes weakness 8).

Artifacts are keyed by the wasm's sha256, the wasmtime version and the engine settings, so a restart reuses them
and a changed binary or config never loads a stale one. Deserializing is only safe for bytes we produced, so an
artifact is trusted only if its sha256 matches the digest the supervisor recorded when it wrote it, kept in another
directory (`module-digests/`); one that does not match is reported, removed and compiled again from the wasm. The
verified bytes are then held in a sealed memfd (no write, shrink or grow, ever) that each worker is handed at start
and deserializes from: what was checked is what runs, whatever happens to the file afterwards (docs/security.md,
"Module cache").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs
import msgspec
import wasmtime
from wasmtime import component

from policy import abi
from worker.protocol import EngineSettings, build_engine_config
from supervisor.atomic_file import write_atomically

WASMTIME_VERSION = importlib.metadata.version("wasmtime")
DIGESTS_DIR = "module-digests"
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL

log = logging.getLogger(__name__)


class ModuleCompileError(Exception):
    """The plugin's wasm could not be read or compiled."""


@attrs.frozen
class ExportSignature:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __iter__(self) -> Iterator[tuple[str, ...]]:  # `params, results = exports[name]`
        return iter((self.params, self.results))


@attrs.frozen
class VerifiedModule:
    """A serialized module whose bytes matched the supervisor's digest, held in a sealed memfd (owned by the cache:
    valid until ModuleCache.close; hand out duplicates, never close it)."""

    path: Path  # the cache entry it was read from or written to
    digest: str  # sha256 of the serialized bytes
    fd: int
    component: bool = False  # a component (wit/tark.wit), not a core module: read from the wasm's preamble


class ModuleCache:
    def __init__(self, cache_dir: Path, settings: EngineSettings = EngineSettings(),
                 security_events: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self._dir = Path(cache_dir) / "modules"
        self._digests = Path(cache_dir) / DIGESTS_DIR
        self.settings = settings
        self._engines: dict[EngineSettings, wasmtime.Engine] = {settings: wasmtime.Engine(build_engine_config(settings))}
        self._engine = self._engines[settings]
        self._exports: dict[tuple, dict[str, ExportSignature]] = {}
        self._verified: dict[str, VerifiedModule] = {}
        self._security_events = security_events
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._verified)
        # Wraps each compile (not a cache hit): the CLI shows a live status on a terminal (docs/cli.md).
        self.on_compile: Callable[[str, int], contextlib.AbstractContextManager[None]] = _no_observer

    def settings_for(self, memory_limit_bytes: int) -> EngineSettings:
        """This cache's settings with the memory reservation equal to a plugin's memory cap."""
        return msgspec.structs.replace(self.settings, memory_reservation=memory_limit_bytes)

    def artifact_for(self, wasm_path: Path, name: str | None = None, settings: EngineSettings | None = None) -> Path:
        """The serialized module's cache entry for `wasm_path` (for `settings`, default this cache's), compiling
        it on first use."""
        return self.load(wasm_path, name, settings).path

    def load(self, wasm_path: Path, name: str | None = None,
             settings: EngineSettings | None = None, *, expected_sha256: str | None = None) -> VerifiedModule:
        """The verified serialized module for `wasm_path` compiled for `settings` (default: this cache's): from
        memory, else from the cache if its digest matches, else compiled (and cached) anew. With `expected_sha256`
        (a pinned, approved wasm) the wasm bytes read here, the ones compiled, must have that digest: nothing can
        be swapped between the pin check and the compile."""
        settings = settings or self.settings
        wasm = _read_wasm(wasm_path)
        label = name or Path(wasm_path).name
        if expected_sha256 is not None and (actual := hashlib.sha256(wasm).hexdigest()) != expected_sha256:
            raise ModuleCompileError(f"{label}: {Path(wasm_path).name} is not the approved module (sha256 {actual},"
                                     f" approved {expected_sha256}); reinstall or update the plugin")
        artifact = self._artifact_path(wasm, settings)
        with self._lock:
            known = self._verified.get(artifact.name)
        if known is not None:
            return known
        is_component = abi.wasm_kind(wasm) == abi.COMPONENT
        data = self._read_verified(artifact, label)
        if data is None:
            data = bytes(self._compile(wasm, label, self._engine_for(settings), is_component).serialize())
            # The digest first: another process that finds the entry always finds its digest too.
            self._write_digest(artifact, hashlib.sha256(data).hexdigest())
            self._write_atomically(artifact, data)
        module = VerifiedModule(artifact, hashlib.sha256(data).hexdigest(), _sealed_memfd(data, label), is_component)
        with self._lock:
            known = self._verified.setdefault(artifact.name, module)
        if known is not module:  # another thread got there first
            os.close(module.fd)
        return known

    def close(self) -> None:
        """Close the memfds (workers already started keep theirs)."""
        with self._lock:
            self._finalizer()

    def _read_verified(self, artifact: Path, label: str) -> bytes | None:
        """The entry's bytes if they match the recorded digest; None if there is no entry. An entry without a
        digest or with another one is reported and removed: only bytes this supervisor wrote are deserialized."""
        try:
            data = artifact.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModuleCompileError(f"Failed to read the compiled module {artifact}: {exc.strerror}") from None
        actual = hashlib.sha256(data).hexdigest()
        try:
            recorded = self._digest_path(artifact).read_text().strip()
        except FileNotFoundError:
            recorded = None
        if recorded == actual:
            return data
        self._report(label, "module_cache_tampered", {
            "entry": str(artifact), "sha256": actual, "expected": recorded or "(no digest recorded)",
        })
        artifact.unlink(missing_ok=True)
        return None

    def _report(self, plugin: str, kind: str, fields: dict[str, Any]) -> None:
        if self._security_events is None:
            log.warning("security event %s for plugin %s: %s", kind, plugin, fields)
        else:
            self._security_events(plugin, kind, fields)

    def _digest_path(self, artifact: Path) -> Path:
        return self._digests / f"{artifact.name}.sha256"

    def _write_digest(self, artifact: Path, digest: str) -> None:
        self._digests.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self._digest_path(artifact), f"{digest}\n".encode())

    def _engine_for(self, settings: EngineSettings) -> wasmtime.Engine:
        with self._lock:
            engine = self._engines.get(settings)
            if engine is None:
                engine = self._engines[settings] = wasmtime.Engine(build_engine_config(settings))
            return engine

    def exports(self, wasm_path: Path, name: str | None = None) -> dict[str, ExportSignature]:
        """Exported function name -> signature, read in the supervisor (never trusting a worker's word).

        Cached by file identity, so a call does not re-read and re-hash the wasm; an install or update replaces
        the file (new inode), an edit in place changes its size or mtime."""
        key = _file_identity(wasm_path)
        with self._lock:
            cached = self._exports.get(key)
        if cached is not None:
            return cached
        verified = self.load(wasm_path, name)
        found: dict[str, ExportSignature] = {}
        if verified.component:
            # A component stands for the core exports of the table entries it has (policy/abi.py): every caller
            # in the supervisor then treats it as the core module it is equivalent to.
            for export, (params, results) in abi.component_core_exports(self._component_functions(verified)).items():
                found[export] = ExportSignature(params, results)
        else:
            module = wasmtime.Module.deserialize_file(self._engine, f"/proc/self/fd/{verified.fd}")
            for export in module.exports:
                ty = export.type
                if isinstance(ty, wasmtime.FuncType):
                    found[export.name] = ExportSignature(
                        tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)
                    )
        with self._lock:
            self._exports[key] = found
        return found

    def _artifact_path(self, wasm: bytes, settings: EngineSettings) -> Path:
        digest = hashlib.sha256(wasm).hexdigest()
        settings_hash = hashlib.sha256(settings.cache_key().encode()).hexdigest()[:16]
        return self._dir / f"{digest}-{WASMTIME_VERSION}-{settings_hash}.cwasm"

    def _component_functions(self, verified: VerifiedModule) -> dict[str, set[str]]:
        """Each interface the component exports -> the names of its functions."""
        compiled = component.Component.deserialize_file(self._engine, f"/proc/self/fd/{verified.fd}")
        functions: dict[str, set[str]] = {}
        for interface, item in compiled.type.exports(self._engine).items():
            ty = item.ty
            if isinstance(ty, component.ComponentInstanceType):
                functions[interface] = {name for name, inner in ty.exports(self._engine).items()
                                        if isinstance(inner.ty, component.FuncType)}
        return functions

    def _compile(self, wasm: bytes, name: str, engine: wasmtime.Engine,
                 is_component: bool = False) -> wasmtime.Module | component.Component:
        try:
            with self.on_compile(name, len(wasm)):
                return component.Component(engine, wasm) if is_component else wasmtime.Module(engine, wasm)
        except wasmtime.WasmtimeError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ModuleCompileError(f"Failed to compile WASM: {name}: {reason}") from None

    def _write_atomically(self, target: Path, data: bytes) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(target, data)


def _no_observer(_name: str, _size: int) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _sealed_memfd(data: bytes, label: str) -> int:
    fd = os.memfd_create(f"tark-module-{label}"[:200], os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_all(verified: dict[str, VerifiedModule]) -> None:
    for module in verified.values():
        os.close(module.fd)
    verified.clear()


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
