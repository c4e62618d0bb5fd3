"""`tark tool list` and `tark tool run PLUGIN TOOL --args JSON`: tool plugins, with hook plugins firing around them."""

from __future__ import annotations

import sys

import click

from supervisor import paths
from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import json_option, cut, echo, header, make_console, print_json, warn
from supervisor.registry import Registry
from supervisor.tools import ToolInfo, ToolRun, ToolRunner


class ToolFailed(click.ClickException):
    """The tool ran and failed."""


@click.group("tool")
def tool_group() -> None:
    """Tools of the installed tool plugins."""


@tool_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List the tools of every enabled tool plugin."""
    with open_supervisor() as supervisor:
        discovery = ToolRunner(supervisor, Registry(paths.plugins_dir())).discover()
    for problem in discovery.problems:
        warn(f"tool plugin '{problem.plugin}': {problem.message}")
    if as_json:
        print_json([_tool_json(info) for info in discovery.tools])
        return
    console = make_console()
    header(console, "=== Tools ===")
    if not discovery.tools:
        console.print("No tools. Tool plugins are installed with: tark plugin add <source>")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.ROUNDED, highlight=False)
    for column in ("Plugin", "Tool", "Risk", "Parameters", "Description"):
        table.add_column(column, no_wrap=True)
    for info in discovery.tools:
        table.add_row(info.plugin, info.tool.name, _risk_label(info), cut(info.tool.schema_summary()),
                      cut(info.tool.description))
    console.print(table)


@tool_group.command("run")
@click.argument("plugin")
@click.argument("tool")
@click.option("--args", "args_text", default="{}", show_default=True, help="The tool's arguments as JSON.")
@json_option
@click.option("--yes", "-y", is_flag=True, help="Allow a risky or dangerous tool without asking.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001),
              help="Wall-clock limit for the tool, seconds.")
def run_command(plugin: str, tool: str, args_text: str, as_json: bool, yes: bool, timeout_s: float | None) -> None:
    """Run TOOL of tool plugin PLUGIN, with hooks around it.

    Every enabled hook plugin hears before, after and on error.
    """

    def confirm(info: ToolInfo) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        risk = info.risk.label if info.risk is not None else "of unknown risk"
        return click.confirm(f"Tool '{info.tool.name}' of plugin '{info.plugin}' is {risk}. Run it?", err=True)

    with open_supervisor() as supervisor:
        run = ToolRunner(supervisor, Registry(paths.plugins_dir())).run(
            plugin, tool, args_text, confirm=confirm, timeout_s=timeout_s)
    for hook in run.hooks:
        if not hook.ok:
            warn(f"hook '{hook.plugin}' failed in {hook.event.value}: {hook.error}")
    if as_json:
        print_json(_run_json(run))
    elif run.result.output:
        echo(run.result.output)
    if not run.success:
        raise ToolFailed(f"tool '{tool}' of plugin '{plugin}' failed: {run.result.error}")


def _risk_label(info: ToolInfo) -> str:
    return info.risk.label if info.risk is not None else "unknown"


def _tool_json(info: ToolInfo) -> dict:
    return {
        "plugin": info.plugin,
        "name": info.tool.name,
        "description": info.tool.description,
        "risk_level": _risk_label(info),
        "parameters_schema": info.tool.parameters_schema,
    }


def _run_json(run: ToolRun) -> dict:
    return {
        "plugin": run.plugin,
        "tool": run.tool,
        "success": run.result.success,
        "output": run.result.output,
        "error": run.result.error,
        "hooks": [{"plugin": h.plugin, "event": h.event.value, "ok": h.ok, "error": h.error} for h in run.hooks],
    }
