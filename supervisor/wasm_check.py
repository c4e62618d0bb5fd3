"""Validate a plugin's wasm binary with the same wasmtime configuration the workers use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import wasmtime

from worker.protocol import EngineSettings, build_engine_config


class WasmValidationError(Exception):
    """The file is not a wasm module this runtime can load."""


def validate_wasm(data: bytes, settings: EngineSettings = EngineSettings()) -> None:
    """Raise WasmValidationError("WASM validation failed: <reason>") unless `data` is a valid module."""
    engine = wasmtime.Engine(build_engine_config(settings))
    try:
        wasmtime.Module.validate(engine, data)
    except wasmtime.WasmtimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
        raise WasmValidationError(f"WASM validation failed: {reason}") from None


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
