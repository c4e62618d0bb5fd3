"""`tark plugin call NAME EXPORT [ARG...]`: raw invocation of one export through the plugin's worker."""

from __future__ import annotations


import click

from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import echo, echo_json_line, json_option


class CallFailed(click.ClickException):
    """The export ran but failed (trap, limit, bad result) or returned a negative code."""


@click.command("call")
@click.argument("name")
@click.argument("export")
@click.argument("args", nargs=-1)
@json_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001), help="Deadline of the call in seconds, covering guest CPU and every host call it waits on "
                   "(default: the plugin's call_timeout_s limit).")
def call_command(name: str, export: str, args: tuple[str, ...], as_json: bool, timeout_s: float | None) -> None:
    """Call EXPORT of plugin NAME with string ARGS.

    The arguments are passed with tark's alloc convention and the result is printed.
    Exports that tark knows get tark's result buffer size; others are called by their signature: two i32 per
    string argument, plus a result pointer when the count is odd.
    """
    with open_supervisor() as supervisor:
        result = supervisor.call(name, export, list(args), timeout_s=timeout_s)
    if result.error is not None:
        raise CallFailed(f"plugin '{name}' export '{export}' failed ({result.error_kind}): {result.error}")
    if as_json:
        echo_json_line({"ret": result.ret, "output": result.output})
    elif result.output is not None and result.ret is not None and result.ret >= 0:
        echo(result.output)
    else:
        echo(f"Returned: {result.ret}")
        if result.output:
            echo(f"Diagnostics: {result.output}")
    if result.ret is not None and result.ret < 0:
        raise CallFailed(f"Function {export} returned error code: {result.ret}")
