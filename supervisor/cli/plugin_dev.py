"""`tark plugin new` and `tark plugin build`: writing a plugin (docs/writing-plugins.md)."""

from __future__ import annotations

from pathlib import Path

import click

from supervisor import paths
from supervisor.cli.output import echo, json_option, print_json
from supervisor.plugin_build import build_plugin
from supervisor.plugin_scaffold import LANGUAGES, PLUGIN_TYPES, SOURCE_FILES, scaffold


@click.command("new")
@click.argument("name")
@click.option("--type", "plugin_type", required=True, type=click.Choice(PLUGIN_TYPES),
              help="The plugin type (the WIT world it targets).")
@click.option("--lang", default="python", show_default=True, type=click.Choice(LANGUAGES),
              help="python: app.py built by componentize-py; wat: a component written in WAT.")
@json_option
def new_command(name: str, plugin_type: str, lang: str, as_json: bool) -> None:
    """Create directory NAME with a plugin to start from.

    It holds plugin.toml, wit/tark.wit and the source.
    """
    made = scaffold(Path(name), plugin_type, lang)
    if as_json:
        print_json({"directory": str(made.directory), "type": plugin_type, "lang": lang,
                    "files": [str(path.relative_to(made.directory)) for path in made.files]})
        return
    echo(f"Created {plugin_type} plugin '{made.directory.name}' in {made.directory}/:")
    for path in made.files:
        echo(f"  {path.relative_to(made.directory)}")
    echo("Next:")
    echo(f"  edit {made.directory}/{SOURCE_FILES[lang]}")
    echo(f"  tark plugin build {made.directory}")
    echo(f"  tark plugin add --yes {made.directory}")


@click.command("build")
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@click.option("--no-cache", is_flag=True, help="Build even if a build of the same sources is cached.")
@json_option
def build_command(directory: Path, no_cache: bool, as_json: bool) -> None:
    """Build the plugin in DIRECTORY (default .).

    The wasm is written where its plugin.toml names it.
    """
    if (directory / SOURCE_FILES["python"]).is_file():
        echo("Building with componentize-py (embeds CPython: takes a while the first time)...", err=True)
    result = build_plugin(directory, None if no_cache else paths.cache_dir() / "plugin-builds")
    if as_json:
        print_json({"wasm": str(result.wasm), "size": result.size, "lang": result.lang, "world": result.world,
                    "seconds": result.seconds, "cached": result.cached})
        return
    how = "from the build cache" if result.cached else f"in {result.seconds:.1f} s"
    echo(f"Built {result.wasm} ({result.size / 1e6:.1f} MB, {result.lang}"
         f"{', ' + result.world if result.world else ''}) {how}")
