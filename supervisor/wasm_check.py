"""Validate a plugin's wasm binary with the same wasmtime configuration the workers use."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from policy import abi

if TYPE_CHECKING:
    from worker.protocol import EngineSettings


class WasmValidationError(Exception):
    """The file is not a wasm module this runtime can load."""


def validate_wasm(data: bytes, settings: EngineSettings | None = None) -> None:
    """Raise WasmValidationError("WASM validation failed: <reason>") unless `data` is a valid core module or
    component (docs/components.md)."""
    if abi.wasm_kind(data) == abi.COMPONENT and _validated_by_wasm_tools(data):
        return
    # Imported here: `tark plugin info` hashes files with this module and stays clear of wasmtime.
    import wasmtime
    from wasmtime import component

    from worker.protocol import EngineSettings, build_engine_config  # noqa: F811 - the runtime class

    engine = wasmtime.Engine(build_engine_config(settings or EngineSettings()))
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


def _validated_by_wasm_tools(data: bytes) -> bool:
    """True when `wasm-tools validate` accepts the component, False when wasm-tools is not installed; raises
    WasmValidationError with its reason when it rejects it.

    wasmtime-py has no validate-only entry point for components, and compiling a componentize-py plugin (18 MB)
    takes 17-80 s here; validating takes ~0.1 s. The first call compiles it once, into the module cache."""
    import subprocess

    from supervisor.console_scripts import find_console_script

    binary = find_console_script("wasm-tools")
    if binary is None:
        return False
    done = subprocess.run([binary, "validate"], input=data, capture_output=True, timeout=120,
                          env={"RUST_LOG": "off", "RUST_BACKTRACE": "0", "PATH": os.defpath})
    if done.returncode == 0:
        return True
    lines = [line.strip() for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    reason = " ".join(line.removeprefix("error: ") for line in lines if not line.startswith("["))
    raise WasmValidationError(f"WASM validation failed: {reason or 'invalid component'}")


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
