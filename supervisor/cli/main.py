"""The `tark` command: the root click group, error reporting, and the lazily imported commands.

The commands and the user-error types are listed in supervisor/cli/commands.py; a command's module is imported
only when that command runs, so `tark --help` imports click and nothing heavy, and a command that forwards to
a running daemon imports only what it needs (docs/performance.md, "Thin client"). Exceptions of the types
listed in USER_ERRORS and click.ClickException print `Error: <message>` and exit 1; anything else is an
internal error, with its traceback only under -v.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple, Sequence

import click

from policy.text import escape_control
from supervisor.cli.commands import TOP_COMMANDS, USER_ERRORS
from supervisor.cli.lazy import LazyGroup

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C


class CliState(NamedTuple):
    """Passed to every command as `ctx.obj`."""

    verbose: bool


def user_error_types(names: Sequence[str] = USER_ERRORS) -> tuple[type[BaseException], ...]:
    """The listed exception types whose modules are imported (no other can have been raised), and OSError."""
    types: list[type[BaseException]] = [OSError]
    for name in names:
        module_name, _, attribute = name.partition(":")
        module = sys.modules.get(module_name)
        if module is not None:
            types.append(getattr(module, attribute))
    return tuple(types)


class TarkGroup(LazyGroup):
    """The root group: turns known user errors into `Error: <msg>` (exit 1) and hides tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as exc:
            exc.message = escape_control(exc.message, keep_newlines=True)  # guest errors, manifest text
            raise
        except click.exceptions.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C at a prompt: click says Abort
                click.echo("Interrupted.", err=True)
                raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
            raise
        except click.exceptions.Exit:
            raise
        except user_error_types() as exc:
            raise click.ClickException(escape_control(_user_message(exc), keep_newlines=True)) from None
        except KeyboardInterrupt:
            # Ctrl-C: the call in flight was cancelled on the way out (its worker stopped, nothing left on
            # disk); one line and the shell's convention for SIGINT.
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks by default
            verbose = isinstance(ctx.obj, CliState) and ctx.obj.verbose
            if verbose:
                import traceback

                traceback.print_exc(file=sys.stderr)
            hint = "" if verbose else " (run with -v for the traceback)"
            raise click.ClickException(escape_control(f"internal error: {type(exc).__name__}: {exc}{hint}",
                                                      keep_newlines=True)) from None


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


@click.group(cls=TarkGroup, lazy=TOP_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks for internal errors.")
@click.version_option(package_name="tark-supervisor", prog_name="tark", message="%(prog)s %(version)s")
@click.pass_context
def tark(ctx: click.Context, verbose: bool) -> None:
    """tark: hardened plugin runtime.

    Exit codes: 0 ok, 1 error, 2 usage error, 130 interrupted. Every command takes --json (one JSON document on
    stdout). Shell completion: tark completion bash|zsh|fish (docs/cli.md)."""
    from supervisor.logging_setup import ENV_VAR, configure_logging

    ctx.obj = CliState(verbose=verbose)
    configure_logging(verbose, os.environ.get(ENV_VAR))


def build_cli() -> TarkGroup:
    return tark  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> None:
    try:
        build_cli().main(args=list(argv) if argv is not None else None, prog_name="tark")
    except KeyboardInterrupt:  # before a command runs (e.g. while its modules import): no traceback either
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
