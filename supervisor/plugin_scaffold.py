"""`tark plugin new`: a plugin directory to start from (docs/writing-plugins.md).

NAME/plugin.toml (the manifest, declaring only what the template uses), NAME/wit/tark.wit (the project's WIT, so
the plugin builds against the contract this runtime hosts) and the source: app.py (Python, built with
componentize-py) or plugin.wat (a component written as the core module it embeds). `tark plugin build` needs no
other configuration: the language comes from which source is present and the WIT world from the plugin type.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import attrs

from policy.manifest import ManifestError, parse_manifest

PLUGIN_TYPES = ("auth", "tool", "provider", "channel", "hook")
LANGUAGES = ("python", "wat")
WASM_NAME = "plugin.wasm"
SOURCE_FILES = {"python": "app.py", "wat": "plugin.wat"}
# The project's WIT: the worker hosts exactly this contract (docs/components.md).
PROJECT_WIT = Path(__file__).resolve().parent.parent / "wit" / "tark.wit"


class ScaffoldError(Exception):
    """A plugin directory could not be created; the message says why and what to do."""


def world_of(plugin_type: str) -> str:
    """The world of wit/tark.wit a plugin of this type targets."""
    return f"{plugin_type}-world"


@attrs.frozen
class Scaffold:
    directory: Path
    files: tuple[Path, ...]


def _manifest(name: str, plugin_type: str, lang: str) -> str:
    lines = ["[plugin]", f'name = "{name}"', 'version = "0.1.0"', f'type = "{plugin_type}"',
             f'description = "A {plugin_type} plugin written in {"Python" if lang == "python" else "WAT"}"',
             f'wasm = "{WASM_NAME}"', "",
             "# Capabilities the plugin uses; `tark plugin add` asks you to approve each one (docs/permissions.md).",
             "[capabilities]"]
    # the Python tool template keeps nothing; every other template keeps its state in storage
    lines.append("storage = false" if (plugin_type, lang) == ("tool", "python") else "storage = true")
    if plugin_type == "provider":
        lines += ["", "[[contributes.providers]]", f'id = "{name}"', f'name = "{name}"']
    if plugin_type == "channel":
        lines += ["", "[[contributes.channels]]", f'id = "{name}"', f'name = "{name}"']
    return "\n".join(lines) + "\n"


def _template(lang: str, plugin_type: str) -> str:
    suffix = "py" if lang == "python" else "wat"
    return resources.files("supervisor.plugin_templates").joinpath(lang, f"{plugin_type}.{suffix}").read_text()


def scaffold(directory: Path, plugin_type: str, lang: str = "python") -> Scaffold:
    """Create `directory` (its name is the plugin's name) with a manifest, the WIT and a source to edit."""
    name = directory.name
    if plugin_type not in PLUGIN_TYPES:
        raise ScaffoldError(f"unknown plugin type '{plugin_type}': use one of {', '.join(PLUGIN_TYPES)}")
    if lang not in LANGUAGES:
        raise ScaffoldError(f"unknown language '{lang}': use one of {', '.join(LANGUAGES)}")
    manifest = _manifest(name, plugin_type, lang)
    try:
        parse_manifest(manifest)
    except ManifestError as exc:
        raise ScaffoldError(f"'{name}' cannot be a plugin name: {exc}") from None
    if directory.exists():
        raise ScaffoldError(f"{directory} already exists: choose another name or remove it first")
    if not PROJECT_WIT.is_file():
        raise ScaffoldError(f"the project's WIT is missing ({PROJECT_WIT}): is this a complete checkout?")
    source = _template(lang, plugin_type)
    if lang == "python":
        source = source.format(name=name, wasm=WASM_NAME)
    directory.mkdir(parents=True)
    (directory / "wit").mkdir()
    written = {directory / "plugin.toml": manifest,
               directory / "wit" / "tark.wit": PROJECT_WIT.read_text(),
               directory / SOURCE_FILES[lang]: source,
               directory / ".gitignore": f"{WASM_NAME}\n__pycache__/\n"}
    for path, text in written.items():
        path.write_text(text)
    return Scaffold(directory=directory, files=tuple(written))
