"""`tark plugin auth <id>`: configure a channel plugin as tark does (tark-core-abi.md §6, docs/channels.md
"Credentials"): storage scope, the plugin's settings, an optional OAuth flow, tark's passphrase envelope, then the
plaintext goes to the plugin's `channel_auth_init`.

On a terminal it asks exactly tark's questions; in scripts every answer is a flag (`--scope`, `--set KEY=VALUE`,
`--stdin` for a JSON object of settings, `--oauth/--no-oauth`) and the passphrase comes from
TARK_PLUGIN_PASSPHRASE. Nothing is written until the passphrase is known to be right for a file it replaces.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import attrs
import click

from policy.channel_settings import (CLIENT_SECRET, DISCORD, Setting, SettingsError, channel_settings, check_given,
                                     config_payload, credentials_text, flow_label, missing)
from supervisor import channel_credentials as store
from supervisor import envelope, paths
from supervisor.channels.operations import SIGNATURES
from supervisor.cli.auth import browser_opener
from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import echo, print_json
from supervisor.cli.passphrase import new_passphrase, on_terminal
from supervisor.control_client import ControlError
from supervisor.credentials import CredentialsError
from supervisor.oauth.errors import OAuthError
from supervisor.oauth.flow import FlowOptions, obtain_credentials_text
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.call_api import CallRefused

MAX_STDIN_BYTES = 64 * 1024
AUTH_INIT = "channel_auth_init"
CALL_TIMEOUT_S = 30.0


class PluginAuthError(click.ClickException):
    """A user error of `tark plugin auth` (exit 1)."""


@click.command("auth", short_help="Set a channel plugin's credentials (encrypted).")
@click.argument("plugin_id")
@click.option("--scope", type=click.Choice(["global", "project"]), default=None,
              help="Store globally (default) or in ./.tark/plugins/<id>/oauth.json. Asked on a terminal.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A setting (repeatable). Pass secrets with --stdin: argv is visible to other processes.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the settings from stdin as one JSON object.")
@click.option("--oauth/--no-oauth", "run_oauth", default=None,
              help="Run the plugin's OAuth flow (asked on a terminal; a plugin without settings always runs it).")
@click.option("--replace", is_flag=True,
              help="Replace an encrypted file even when the passphrase does not open it.")
@click.option("--no-browser", is_flag=True, help="OAuth: print the sign-in URL instead of opening a browser.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), help="OAuth: seconds to wait for sign-in.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def plugin_auth_command(plugin_id: str, scope: str | None, assignments: tuple[str, ...], from_stdin: bool,
                        run_oauth: bool | None, replace: bool, no_browser: bool, timeout_s: float | None,
                        as_json: bool) -> None:
    """Store a channel plugin's settings and tokens, encrypted.

    They are handed to the plugin's channel_auth_init.

    The passphrase comes from TARK_PLUGIN_PASSPHRASE, else a hidden prompt.
    """
    plugin = Registry(paths.plugins_dir()).get(plugin_id)
    if plugin.manifest.plugin.type != "channel":
        raise PluginAuthError(f"Plugin '{plugin_id}' is a {plugin.manifest.plugin.type} plugin, not a channel; "
                              "sign in to providers with: tark auth <provider>")
    if plugin.manifest.oauth is None:
        raise PluginAuthError(f"Plugin '{plugin_id}' has no OAuth configuration")
    interactive = on_terminal() and not from_stdin
    say: Callable[[str], None] = (lambda text: echo(text, err=True)) if as_json else echo
    if not as_json:
        click.secho(f"=== Plugin OAuth: {plugin_id} ===", bold=True, fg="cyan")
        echo("")
    chosen_scope = scope or (_ask_scope(say) if interactive else "global")
    project = Path.cwd()
    path = store.storage_path(plugin, chosen_scope, project)  # type: ignore[arg-type]

    settings = channel_settings(plugin.manifest)
    given = _given_settings(assignments, from_stdin)
    check_given(settings, given)
    values = _settings_values(plugin, settings, given, interactive, say)
    if run_oauth is None:
        run_oauth = not settings or (interactive and _ask_yes_no(flow_label(plugin.manifest)))

    passphrase = new_passphrase(path)
    _check_replaceable(path, passphrase, replace)
    tokens_text = _oauth(plugin, values, say, no_browser, timeout_s) if run_oauth else None
    plaintext = credentials_text(config_payload(settings, values), tokens_text)
    saved = store.save(plugin, chosen_scope, project, plaintext, passphrase)  # type: ignore[arg-type]
    accepted = _auth_init(plugin.name, plaintext, saved)
    if as_json:
        print_json({"plugin": plugin.name, "scope": chosen_scope, "path": str(saved), "encrypted": True,
                    "settings": sorted(k for k, v in values.items() if v and _stored(settings, k)),
                    "oauth": bool(run_oauth), "auth_init": "accepted" if accepted else "not exported"})
        return
    echo(f"✅ Saved credentials to {saved}")


def _stored(settings: tuple[Setting, ...], key: str) -> bool:
    return any(s.key == key and s.stored for s in settings)


def _ask_scope(say: Callable[[str], None]) -> str:
    say("Store plugin credentials in:")
    say("  1) Global (default)")
    say("  2) Project .tark (current directory)")
    choice = click.prompt("Choose [1-2]", default="", show_default=False, prompt_suffix=": ", err=True)
    return "project" if choice.strip() == "2" else "global"


def _ask_yes_no(label: str) -> bool:
    answer = click.prompt(f"{label} [y/N]", default="", show_default=False, prompt_suffix=": ", err=True)
    return answer.strip().lower() in ("y", "yes")


def _given_settings(assignments: tuple[str, ...], from_stdin: bool) -> dict[str, str]:
    given: dict[str, str] = {}
    if from_stdin:
        raw = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        if len(raw) > MAX_STDIN_BYTES:
            raise SettingsError(f"the settings on stdin are larger than {MAX_STDIN_BYTES} bytes")
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SettingsError(f"the settings on stdin are not a JSON object: {exc}") from None
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            raise SettingsError('the settings on stdin must be one JSON object of strings, e.g. {"api_key": "..."}')
        given.update(document)
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{assignment}' is not KEY=VALUE", param_hint="--set")
        given[key] = value
    return given


def _settings_values(plugin: InstalledPlugin, settings: tuple[Setting, ...], given: dict[str, str],
                     interactive: bool, say: Callable[[str], None]) -> dict[str, str]:
    values = dict(given)
    ask = [s for s in settings if s.key not in given]
    if interactive and ask:
        say("")
        say("Discord configuration:" if plugin.name == DISCORD else f"{plugin.name} configuration:")
        for setting in ask:
            values[setting.key] = _ask_setting(setting, say)
    for setting in settings:
        if not values.get(setting.key) and setting.default is not None:
            values[setting.key] = setting.default
    absent = missing(settings, values)
    if absent:
        raise SettingsError(f"missing required setting {', '.join(absent)} for plugin '{plugin.name}': pass "
                            f"--set {absent[0]}=VALUE, or a JSON object on stdin with --stdin")
    return values


def _ask_setting(setting: Setting, say: Callable[[str], None]) -> str:
    while True:
        label = setting.label if setting.required else f"{setting.label} (optional)"
        if setting.default is not None:
            label += f" [{setting.default}]"
        value = click.prompt(label, default="", show_default=False, prompt_suffix=": ", hide_input=setting.secret,
                             err=True).strip()
        if value or not setting.required:
            return value
        say("Value required.")


def _check_replaceable(path: Path, passphrase: str, replace: bool) -> None:
    """An encrypted file is replaced only with a passphrase that opens it (or --replace): a mistyped passphrase
    must not silently lock the user out of credentials other channels still use."""
    if replace:
        return
    try:
        text = store.read_text(path)
    except CredentialsError:
        return  # absent or unreadable as credentials: nothing to protect
    if not envelope.looks_encrypted(text):
        return
    try:
        store.open_text(text, path, lambda _path: passphrase)
    except store.PassphraseRejected:
        raise PluginAuthError(f"Wrong passphrase for {path}: it does not open the credentials already stored "
                              "there, so nothing was written. Use the passphrase that file was encrypted with, "
                              "or pass --replace to overwrite it") from None
    except store.CorruptCredentials as exc:
        raise PluginAuthError(f"{exc}; nothing was written (pass --replace to overwrite it)") from None


def _oauth(plugin: InstalledPlugin, values: dict[str, str], say: Callable[[str], None], no_browser: bool,
           timeout_s: float | None) -> str:
    assert plugin.manifest.oauth is not None
    config = plugin.manifest.oauth.expanded(os.environ)
    if plugin.name == DISCORD:  # tark: the application id is the OAuth client id, the client secret its secret
        config = attrs.evolve(config, client_id=values.get("application_id") or config.client_id,
                              client_secret=values.get(CLIENT_SECRET) or config.client_secret)
    unresolved = config.unresolved_fields()
    if unresolved:
        raise PluginAuthError(f"OAuth config has unresolved environment placeholders: {', '.join(unresolved)}")
    options = FlowOptions(open_browser=browser_opener(no_browser), timeout_s=timeout_s)
    say(f"Authenticating with {plugin.name}...")
    try:
        with open_supervisor() as api:
            return obtain_credentials_text(config, api, plugin.name, say, options)
    except (OAuthError, CallRefused, ControlError) as exc:
        raise PluginAuthError(f"Authentication failed: {exc}; nothing was written") from None


def _auth_init(name: str, plaintext: str, saved: Path) -> bool:
    """Hand the plaintext to `channel_auth_init` in the plugin's worker; False when the plugin lacks it."""
    try:
        with open_supervisor() as api:
            if api.exports(name).get(AUTH_INIT) != SIGNATURES[AUTH_INIT]:
                return False
            result = api.call(name, AUTH_INIT, [plaintext], timeout_s=CALL_TIMEOUT_S)
    except (CallRefused, ControlError) as exc:
        raise PluginAuthError(f"Saved credentials to {saved}, but they could not be handed to the plugin: {exc}") \
            from None
    if result.error is not None:
        problem = f"{AUTH_INIT} failed ({result.error_kind}): {result.error}"
    elif result.ret is None or result.ret < 0:
        problem = f"Function {AUTH_INIT} failed with error code: {result.ret}"
    else:
        return True
    raise PluginAuthError(f"Saved credentials to {saved}, but the plugin did not accept them: {problem}")
