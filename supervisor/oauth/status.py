"""`tark auth status` and `tark auth logout`: what each provider/auth plugin has stored, and forgetting it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import attrs

from supervisor.credentials import CredentialsError, credentials_path, delete_credentials, load_credentials
from supervisor.oauth import plugin_calls
from supervisor.oauth.errors import OAuthError
from supervisor.oauth.targets import targets_of
from supervisor.plugin import InstalledPlugin


@attrs.frozen
class AuthStatus:
    plugin: str
    providers: tuple[str, ...]
    display_name: str
    oauth_flow: str | None
    credentials_path: str | None
    has_credentials: bool
    expires_at: float | None
    plugin_status: str | None  # the plugin's own answer; None when it exports no status function
    problems: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "providers": list(self.providers), "problems": list(self.problems)}


def stored_expiry(text: str) -> float | None:
    """`expires_at` (Unix seconds) of stored credentials when they are a JSON object that has one."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    value = document.get("expires_at") if isinstance(document, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def auth_status(plugin: InstalledPlugin, api: plugin_calls.Api, environ: Mapping[str, str] | None = None) -> AuthStatus:
    env = os.environ if environ is None else environ
    problems: list[str] = []
    targets = targets_of(plugin)
    name = ", ".join(t.display_name for t in targets) if plugin.manifest.contributes.providers else None
    if name is None:
        try:
            name = plugin_calls.display_name(api, plugin.name)
        except OAuthError as exc:
            problems.append(str(exc))
    path: Path | None = None
    text = None
    try:
        path = credentials_path(plugin, env)
        text = load_credentials(plugin, env)
    except CredentialsError as exc:
        problems.append(str(exc))
    try:
        own_status = plugin_calls.plugin_status(api, plugin.name)
    except OAuthError as exc:
        own_status = None
        problems.append(str(exc))
    return AuthStatus(
        plugin=plugin.name,
        providers=tuple(t.provider_id for t in targets),
        display_name=name or plugin.name,
        oauth_flow=plugin.manifest.oauth.flow if plugin.manifest.oauth else None,
        credentials_path=str(path) if path else None,
        has_credentials=text is not None,
        expires_at=stored_expiry(text) if text is not None else None,
        plugin_status=own_status,
        problems=tuple(problems),
    )


@attrs.frozen
class LogoutResult:
    deleted: Path | None
    plugin_export: str | None  # the plugin's logout export that ran
    plugin_problem: str | None


def logout(plugin: InstalledPlugin, api: plugin_calls.Api, environ: Mapping[str, str] | None = None) -> LogoutResult:
    """Delete the credentials file (the default path too: weakness 32) and tell the plugin, if enabled."""
    deleted = delete_credentials(plugin, os.environ if environ is None else environ)
    export, problem = None, None
    if plugin.enabled:
        try:
            export = plugin_calls.logout(api, plugin.name)
        except OAuthError as exc:
            problem = str(exc)
    return LogoutResult(deleted=deleted, plugin_export=export, plugin_problem=problem)
