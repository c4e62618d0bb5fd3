"""The passphrase of encrypted channel credentials, as tark gets it: `TARK_PLUGIN_PASSPHRASE`, else a hidden
prompt on the terminal (`New passphrase:` + `Confirm passphrase:` for a new file, `Passphrase:` to open one).
Without a terminal and without the variable, a clear error instead of a prompt that would hang a script."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from supervisor.channel_credentials import PASSPHRASE_ENV, CredentialsSource, NoPassphrase


def on_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def new_passphrase(path: Path) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        if not value:
            raise NoPassphrase(f"{PASSPHRASE_ENV} is empty; credentials are not encrypted with an empty passphrase")
        return value
    if not on_terminal():
        raise NoPassphrase(f"set {PASSPHRASE_ENV} to encrypt {path} (no terminal to ask for a passphrase)")
    click.echo("")
    click.echo("Encrypting credentials with a passphrase.")
    first = click.prompt("New passphrase", hide_input=True, prompt_suffix=": ", err=True)
    second = click.prompt("Confirm passphrase", hide_input=True, prompt_suffix=": ", err=True)
    if first != second:
        raise NoPassphrase("Passphrases do not match")
    if not first:
        raise NoPassphrase("An empty passphrase does not protect anything; choose one")
    return first


class AskOnce:
    """A Passphrase callable: the variable, else one prompt on the terminal; remembered for the command."""

    def __init__(self) -> None:
        self.value: str | None = None

    def __call__(self, path: Path) -> str:
        if self.value is None:
            value = os.environ.get(PASSPHRASE_ENV)
            if value is None:
                if not on_terminal():
                    raise NoPassphrase(f"{path} is encrypted: set {PASSPHRASE_ENV} (no terminal to ask for the "
                                       "passphrase)")
                value = click.prompt(f"Passphrase for {path}", hide_input=True, prompt_suffix=": ", err=True)
            self.value = value
        return self.value


def cli_source(project: Path | None = None) -> tuple[CredentialsSource, AskOnce]:
    """Credentials of the current directory's project (else global), with the passphrase asked at most once."""
    ask = AskOnce()
    return CredentialsSource(Path.cwd() if project is None else project, ask), ask
