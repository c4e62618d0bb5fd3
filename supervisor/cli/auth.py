"""`tark auth [NAME]`, `tark auth status [--json]`, `tark auth logout NAME` (tark-core-abi.md §6).

Unlike tark, a failed sign-in exits 1 (weakness 32). Plugin exports run in the plugin's own worker.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

import click

from supervisor import paths
from supervisor.channel_credentials import StoredState, stored_state
from supervisor.cli.connect import open_supervisor
from supervisor.cli.output import echo, header_line, json_option, print_json, warn
from supervisor.control_client import ControlError
from supervisor.credentials import CredentialsError
from supervisor.oauth.device import DEFAULT_MIN_INTERVAL_S, PollSettings
from supervisor.oauth.errors import OAuthError
from supervisor.oauth.flow import FlowOptions, authenticate
from supervisor.oauth.status import AuthStatus, auth_status, logout
from supervisor.oauth.targets import AuthTarget, auth_plugins, find_target, oauth_targets
from supervisor.plugin import InstalledPlugin
from supervisor.registry import Registry
from supervisor.call_api import CallRefused

NO_BROWSER_ENV = "TARK_NO_BROWSER"


class AuthFailed(click.ClickException):
    """Printed as tark prints it (`❌ Authentication failed: ...`), exit 1."""

    def show(self, file: Any = None) -> None:
        echo(f"❌ Authentication failed: {self.message}", err=True)


def _header(text: str) -> None:
    header_line(text)


class AuthGroup(click.Group):
    """`tark auth NAME ...` runs the hidden `login` command; `status` and `logout` are ordinary subcommands."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "login", self.commands["login"], args
        return super().resolve_command(ctx, args)


_flow_options = [
    click.option("--no-browser", is_flag=True, help=f"Print the sign-in URL instead of opening a browser "
                                                    f"(also when not on a terminal, or with {NO_BROWSER_ENV}=1)."),
    click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1),
                 help="Seconds to wait for the sign-in (PKCE default 120; device flow: until the code expires)."),
    click.option("--min-poll-interval", "min_poll_s", type=click.FloatRange(min=0.0), default=None, hidden=True,
                 help="Device flow: never poll the token endpoint more often than this (seconds)."),
    json_option,
]


def flow_options(function: Any) -> Any:
    for option in reversed(_flow_options):
        function = option(function)
    return function


@click.group("auth", cls=AuthGroup, invoke_without_command=True,
             subcommand_metavar="[NAME | status | logout NAME]")
@flow_options
@click.pass_context
def auth_group(ctx: click.Context, no_browser: bool, timeout_s: float | None, min_poll_s: float | None,
               as_json: bool) -> None:
    """Sign in to providers (OAuth), show status, log out.

    `tark auth NAME` signs in to provider NAME with OAuth (PKCE or device flow).

    With no NAME, lists the plugin providers that have an [oauth] section and asks which one.
    """
    if ctx.invoked_subcommand is not None:
        return
    if as_json:
        raise click.UsageError("With --json give the provider: tark auth NAME --json")
    _header("=== Tark Authentication ===")
    targets = oauth_targets(Registry(paths.plugins_dir()))
    if not targets:
        raise click.ClickException("No installed provider plugin has an [oauth] section; "
                                   "install one with: tark plugin add <path-or-git-url>")
    echo("Select a provider to authenticate:")
    for number, target in enumerate(targets, 1):
        echo(f"  {number}. {target.provider_id} - {target.display_name} (plugin)")
    answer = click.prompt(f"Enter choice (1-{len(targets)})", default="", show_default=False, prompt_suffix=": ")
    if not answer.strip().isdigit() or not 1 <= int(answer) <= len(targets):
        raise click.ClickException("Invalid choice")
    _login(targets[int(answer) - 1], no_browser, timeout_s, min_poll_s, as_json)


@auth_group.command("login", hidden=True)
@click.argument("name")
@flow_options
@click.pass_context
def login_command(ctx: click.Context, name: str, no_browser: bool, timeout_s: float | None,
                  min_poll_s: float | None, as_json: bool) -> None:
    """Sign in to provider NAME."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    as_json = as_json or parent.get("as_json", False)
    if not as_json:
        _header("=== Tark Authentication ===")
    target = find_target(Registry(paths.plugins_dir()), name, need_oauth=True)
    _login(target, no_browser or parent.get("no_browser", False),
           timeout_s if timeout_s is not None else parent.get("timeout_s"),
           min_poll_s if min_poll_s is not None else parent.get("min_poll_s"), as_json)


def browser_opener(no_browser: bool) -> Any:
    if no_browser or os.environ.get(NO_BROWSER_ENV) == "1" or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None

    def open_url(url: str) -> bool:
        try:
            return webbrowser.open(url)
        except webbrowser.Error:
            return False

    return open_url


def _login(target: AuthTarget, no_browser: bool, timeout_s: float | None, min_poll_s: float | None,
           as_json: bool = False) -> None:
    say = (lambda text="": echo(text, err=True)) if as_json else echo  # with --json the sign-in steps go to stderr
    say(f"Authenticating with: {target.provider_id}")
    poll = PollSettings(min_interval_s=DEFAULT_MIN_INTERVAL_S if min_poll_s is None else min_poll_s)
    options = FlowOptions(open_browser=browser_opener(no_browser), timeout_s=timeout_s, poll=poll)
    try:
        with open_supervisor() as supervisor:
            result = authenticate(target, supervisor, say, options)
    except (OAuthError, CredentialsError, CallRefused, ControlError) as exc:
        raise AuthFailed(str(exc)) from None
    except OSError as exc:
        detail = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise AuthFailed(detail) from None
    if as_json:
        print_json({"provider": target.provider_id, "plugin": target.plugin.name,
                    "credentials_path": str(result.credentials_path)})
        return
    echo("✅ Successfully authenticated!")
    echo(f"Credentials saved to: {result.credentials_path}")
    if target.plugin.manifest.plugin.type == "provider":
        echo("You can now use this provider:")
        echo(f"  tark chat --provider {target.provider_id}")


@auth_group.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show credentials of providers, auth and channel plugins.

    Providers and auth plugins: stored credentials, expiry and the plugin's own status. Channel plugins: this
    directory's project file, else the global one.
    """
    registry = Registry(paths.plugins_dir())
    plugins = auth_plugins(registry)
    with open_supervisor() as supervisor:
        statuses = [auth_status(plugin, supervisor) for plugin in plugins]
    channels = [(plugin, stored_state(plugin, Path.cwd())) for plugin in registry.list().plugins
                if plugin.enabled and plugin.manifest.plugin.type == "channel" and plugin.manifest.oauth is not None]
    if as_json:
        print_json([{**s.to_json(), "type": p.manifest.plugin.type} for p, s in zip(plugins, statuses)]
                   + [_channel_json(plugin, state) for plugin, state in channels])
        return
    _header("=== Authentication Status ===")
    if not statuses and not channels:
        echo("No provider, auth or channel plugins with credentials installed.")
    for status in statuses:
        _print_status(status)
    for plugin, state in channels:
        _print_channel(plugin, state)
    echo("")
    if channels:
        echo("Configure a channel with: tark plugin auth <plugin>")
    echo("Authenticate with: tark auth <provider>")
    echo("Logout with: tark auth logout <provider>")


def _print_status(status: AuthStatus) -> None:
    ok = status.has_credentials and status.plugin_status in (None, "authenticated", "not required")
    expired = status.expires_at is not None and status.expires_at <= time.time()
    mark = "✅" if ok and not expired else "❌"
    echo(f"{mark} {', '.join(status.providers)} - {status.display_name} (plugin {status.plugin})")
    if status.oauth_flow is None and not status.has_credentials:
        echo("     Credentials: none (no [oauth] section)")
    elif status.has_credentials:
        echo(f"     Credentials: {status.credentials_path}")
    else:
        echo(f"     Credentials: not signed in ({status.oauth_flow}; expected at {status.credentials_path})")
    if status.expires_at is not None:
        moment = datetime.datetime.fromtimestamp(status.expires_at, datetime.timezone.utc)
        echo(f"     {'Expired' if expired else 'Expires'}: {moment.isoformat(timespec='seconds')}")
    if status.plugin_status is not None:
        echo(f"     Plugin reports: {status.plugin_status}")
    for problem in status.problems:
        echo(f"     Problem: {problem}")


def _channel_names(plugin: InstalledPlugin) -> tuple[list[str], str]:
    contributed = plugin.manifest.contributes.channels
    ids = [c.id for c in contributed] or [plugin.name]
    return ids, ", ".join(c.name or c.id for c in contributed) or plugin.name


def _channel_json(plugin: InstalledPlugin, state: StoredState) -> dict[str, Any]:
    ids, display = _channel_names(plugin)
    return {"plugin": plugin.name, "type": "channel", "channels": ids, "display_name": display,
            "oauth_flow": plugin.manifest.oauth.flow if plugin.manifest.oauth else None,
            "credentials_path": str(state.path) if state.path else None, "scope": state.scope,
            "has_credentials": state.scope is not None, "encrypted": state.encrypted,
            "problems": [state.problem] if state.problem else []}


def _print_channel(plugin: InstalledPlugin, state: StoredState) -> None:
    ids, display = _channel_names(plugin)
    mark = "✅" if state.scope is not None else "❌"
    echo(f"{mark} {', '.join(ids)} - {display} (channel plugin {plugin.name})")
    if state.scope is not None:
        echo(f"     Credentials: {state.path} ({state.scope}, {'encrypted' if state.encrypted else 'NOT encrypted'})")
    elif state.problem is None:
        echo(f"     Credentials: none (configure with: tark plugin auth {plugin.name})")
    if state.problem is not None:
        echo(f"     Problem: {state.problem}")


@auth_group.command("logout")
@click.argument("name")
@json_option
def logout_command(name: str, as_json: bool) -> None:
    """Delete provider NAME's credentials; the plugin forgets them."""
    target = find_target(Registry(paths.plugins_dir()), name, need_oauth=False)
    with open_supervisor() as supervisor:
        result = logout(target.plugin, supervisor)
    deleted = [result.deleted] if result.deleted is not None else []
    if target.plugin.manifest.plugin.type == "channel":  # this directory's project file too (docs/channels.md)
        from supervisor.channel_credentials import delete_project_credentials

        deleted += [p for p in [delete_project_credentials(target.plugin, Path.cwd())] if p is not None]
    if as_json:
        print_json({"provider": name, "plugin": target.plugin.name, "deleted": [str(p) for p in deleted],
                    "plugin_problem": result.plugin_problem})
    elif deleted:
        echo(f"✅ Cleared {target.display_name} OAuth credentials")
        for path in deleted:
            echo(f"   Deleted: {path}")
    else:
        echo(f"No credentials found for {target.display_name}")
    if result.plugin_problem is not None:
        warn(result.plugin_problem)
        raise click.exceptions.Exit(1)
