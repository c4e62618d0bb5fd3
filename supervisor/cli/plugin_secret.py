"""`tark plugin secret set|list|unset`: per-plugin secrets that `tark:env.get` answers before the environment.

The value is never a command-line argument (argv is visible to every process of the machine and lands in
shell history): it comes from stdin when stdin is not a terminal, else from a hidden prompt.
"""

from __future__ import annotations

import sys

import click

from policy.capabilities import EnvAccess, check
from policy.text import escape_control
from supervisor import paths
from supervisor.capabilities.audit import AuditLog, default_audit_path
from supervisor.cli.output import json_option, print_json, warn
from supervisor.registry import Registry
from supervisor.secrets import MAX_VALUE_BYTES, SecretError, SecretStore, validate_key


@click.group("secret")
def secret_group() -> None:
    """Per-plugin secrets, read by plugins as env vars."""


def _installed(plugin_id: str):
    return Registry(paths.plugins_dir()).get(plugin_id)


def _read_value(key: str) -> str:
    if sys.stdin.isatty():
        return click.prompt(f"Value of {key}", hide_input=True, confirmation_prompt=True, err=True)
    raw = sys.stdin.buffer.read(MAX_VALUE_BYTES + 3) if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError("The secret's value on stdin is not UTF-8") from None
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    return value


def _audit(plugin_id: str, kind: str, key: str) -> None:
    audit = AuditLog(default_audit_path(), plugin_id)
    audit.event(kind, key=key)  # the name only: a value never reaches the trail
    audit.close()


@secret_group.command("set")
@click.argument("plugin_id")
@click.argument("key")
@json_option
def set_command(plugin_id: str, key: str, as_json: bool) -> None:
    """Set KEY for PLUGIN_ID (value from stdin or a hidden prompt)."""
    validate_key(key)
    plugin = _installed(plugin_id)
    value = _read_value(key)
    SecretStore().set(plugin.name, key, value)
    _audit(plugin.name, "secret_set", key)
    if not check(plugin.manifest.capabilities, EnvAccess(key)).allowed:
        warn(f"plugin '{plugin.name}' does not declare env '{key}' in its manifest; it cannot read this secret "
             "until its capabilities.env names it")
    if as_json:
        print_json({"plugin": plugin.name, "key": key, "set": True})
        return
    click.echo(f"Secret {key} set for {plugin.name}.")


@secret_group.command("list")
@click.argument("plugin_id")
@json_option
def list_command(plugin_id: str, as_json: bool) -> None:
    """List the names of PLUGIN_ID's secrets (never their values)."""
    keys = SecretStore().keys(plugin_id)
    if as_json:
        print_json({"plugin": plugin_id, "keys": keys})
    elif keys:
        for key in keys:
            click.echo(key)
    else:
        click.echo(f"No secrets for {escape_control(plugin_id)}.")


@secret_group.command("unset")
@click.argument("plugin_id")
@click.argument("key")
@json_option
def unset_command(plugin_id: str, key: str, as_json: bool) -> None:
    """Remove KEY from PLUGIN_ID's secrets."""
    SecretStore().unset(plugin_id, key)
    _audit(plugin_id, "secret_unset", key)
    if as_json:
        print_json({"plugin": plugin_id, "key": key, "set": False})
        return
    click.echo(f"Secret {key} removed from {plugin_id}.")


