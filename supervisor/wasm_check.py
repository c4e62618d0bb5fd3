"""Validate a plugin's wasm binary with the same wasmtime configuration the workers use."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import wasmtime
from wasmtime import component

from policy import abi

from worker.protocol import EngineSettings, build_engine_config


class WasmValidationError(Exception):
    """The file is not a wasm module this runtime can load."""


def validate_wasm(data: bytes, settings: EngineSettings = EngineSettings()) -> None:
    """Raise WasmValidationError("WASM validation failed: <reason>") unless `data` is a valid core module or
    component (docs/components.md)."""
    engine = wasmtime.Engine(build_engine_config(settings))
    try:
        if abi.wasm_kind(data) == abi.COMPONENT:
            component.Component(engine, data)  # no validate-only entry point for components: compiling checks it
        else:
            wasmtime.Module.validate(engine, data)
    except wasmtime.WasmtimeError as exc:
        # wasmtime pretty-prints byte arrays over several lines; one line reads better in `Error: ...`.
        reason = re.sub(r"\s*\n\s*", " ", str(exc).strip()).replace("[ ", "[").replace(", ]", "]")
        reason = reason or "invalid module"
        raise WasmValidationError(f"WASM validation failed: {reason}") from None


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
