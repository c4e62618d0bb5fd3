"""The `tark` command: the root click group, error reporting and command registration.

Adding commands: write a module with `register(cli: TarkGroup) -> None` that adds commands to `cli` (or to
a subgroup: `cli.subgroup("plugin").add_command(...)`) and list it in COMMAND_MODULES. Exceptions of the
types in `cli.user_errors` (extend with `cli.add_user_errors(...)`) and click.ClickException print
`Error: <message>` and exit 1; anything else is an internal error, with its traceback only under -v.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any, Sequence

import attrs
import click

from policy.errors import PolicyError
from policy.text import escape_control
from supervisor.install_record import InstallRecordError
from supervisor.logging_setup import ENV_VAR, LogFilterError, configure_logging
from supervisor.plugin import PluginLoadError
from supervisor.registry import RegistryError
from supervisor.sources import SourceError
from supervisor.wasm_check import WasmValidationError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C

COMMAND_MODULES = (
    "supervisor.cli.plugin",
    "supervisor.cli.plugin_consent",
    "supervisor.cli.plugin_audit",
    "supervisor.cli.plugin_secret",
    "supervisor.cli.plugin_auth",
    "supervisor.cli.call",
    "supervisor.cli.supervisor_cmd",
    "supervisor.cli.tool",
    "supervisor.cli.chat",
    "supervisor.cli.channel",
    "supervisor.cli.auth",
)


@attrs.frozen
class CliState:
    """Passed to every command as `ctx.obj`."""

    verbose: bool


class TarkGroup(click.Group):
    """A click group that turns known user errors into `Error: <msg>` (exit 1) and hides tracebacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_errors: tuple[type[BaseException], ...] = (
            PolicyError, PluginLoadError, RegistryError, SourceError, WasmValidationError,
            InstallRecordError, LogFilterError, OSError,
        )

    def add_user_errors(self, *types: type[BaseException]) -> None:
        self.user_errors += types

    def subgroup(self, name: str) -> click.Group:
        group = self.commands.get(name)
        if not isinstance(group, click.Group):
            raise LookupError(f"no command group '{name}' is registered on tark")
        return group

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as exc:
            exc.message = escape_control(exc.message, keep_newlines=True)  # guest errors, manifest text
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except self.user_errors as exc:
            raise click.ClickException(escape_control(_user_message(exc), keep_newlines=True)) from None
        except KeyboardInterrupt:
            # Ctrl-C: the call in flight was cancelled on the way out (its worker stopped, nothing left on
            # disk); one line and the shell's convention for SIGINT.
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks by default
            verbose = isinstance(ctx.obj, CliState) and ctx.obj.verbose
            if verbose:
                traceback.print_exc(file=sys.stderr)
            hint = "" if verbose else " (run with -v for the traceback)"
            raise click.ClickException(escape_control(f"internal error: {type(exc).__name__}: {exc}{hint}",
                                                      keep_newlines=True)) from None


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


@click.group(cls=TarkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks for internal errors.")
@click.pass_context
def tark(ctx: click.Context, verbose: bool) -> None:
    """tark: hardened plugin runtime."""
    ctx.obj = CliState(verbose=verbose)
    configure_logging(verbose, os.environ.get(ENV_VAR))


def build_cli() -> TarkGroup:
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(tark)
    return tark


def main(argv: Sequence[str] | None = None) -> None:
    build_cli().main(args=list(argv) if argv is not None else None, prog_name="tark")


if __name__ == "__main__":
    main()
