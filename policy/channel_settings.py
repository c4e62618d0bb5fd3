"""What `tark plugin auth` asks a channel plugin's user, and the credentials text it builds (docs/channels.md,
"Credentials").

tark asks only the Discord plugin for settings (Application ID, Public Key, an optional Bot Token, then an optional
Client Secret used only by the OAuth flow). Here a channel plugin may also declare its settings with tark's
`[[contributes.configuration]]` entries (tark parses them and ignores them): one prompt each, labelled with the
description, required unless a default is given.

The texts are tark's: `{"config":{..}}` without OAuth, `{"config":{..},"tokens":..}` with it, bare tokens for a
plugin without settings, `{}` for neither. serde_json's map keeps keys sorted, so keys are sorted here too.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import attrs

from policy.manifest import Manifest

DISCORD = "discord"
CLIENT_SECRET = "client_secret"
_SECRET_KEY = re.compile(r"token|secret|password|passphrase|api_?key|private", re.IGNORECASE)


@attrs.frozen
class Setting:
    key: str
    label: str
    required: bool
    default: str | None = None
    secret: bool = False  # asked with hidden input
    stored: bool = True  # False: used by the OAuth flow only (Discord's client secret), never written


DISCORD_SETTINGS = (
    Setting("application_id", "Discord Application ID", required=True),
    Setting("public_key", "Discord Public Key", required=True),
    Setting("bot_token", "Discord Bot Token", required=False, secret=True),
    Setting(CLIENT_SECRET, "Discord Client Secret", required=False, secret=True, stored=False),
)


class SettingsError(ValueError):
    """Settings given that the plugin does not have, or required ones missing."""


def channel_settings(manifest: Manifest) -> tuple[Setting, ...]:
    if manifest.plugin.name == DISCORD:
        return DISCORD_SETTINGS
    return tuple(Setting(key=entry.key, label=entry.description or entry.key, required=entry.default is None,
                         default=None if entry.default is None else _text(entry.default),
                         secret=bool(_SECRET_KEY.search(entry.key)))
                 for entry in manifest.contributes.configuration)


def flow_label(manifest: Manifest) -> str:
    """tark's question: `Run Discord OAuth flow`."""
    return "Run Discord OAuth flow" if manifest.plugin.name == DISCORD else "Run the OAuth flow"


def check_given(settings: tuple[Setting, ...], given: Mapping[str, str]) -> None:
    known = {s.key for s in settings}
    unknown = sorted(set(given) - known)
    if unknown:
        choices = ", ".join(sorted(known)) or "none"
        raise SettingsError(f"unknown setting {', '.join(unknown)} (this plugin's settings: {choices})")


def missing(settings: tuple[Setting, ...], values: Mapping[str, str]) -> list[str]:
    return [s.key for s in settings if s.required and not values.get(s.key)]


def config_payload(settings: tuple[Setting, ...], values: Mapping[str, str]) -> dict[str, Any] | None:
    """`{"config": {...}}` of the stored settings that have a value; None for a plugin without settings."""
    if not settings:
        return None
    config = {s.key: values[s.key] for s in settings if s.stored and values.get(s.key)}
    return {"config": dict(sorted(config.items()))}


def credentials_text(config: dict[str, Any] | None, tokens_text: str | None) -> str:
    """The plaintext stored (encrypted) and handed to `channel_auth_init`, as tark builds it."""
    if tokens_text is None:
        return _compact(config if config is not None else {})
    try:
        tokens: Any = json.loads(tokens_text)
    except ValueError:
        tokens = tokens_text
    if config is None:
        return _compact(tokens)
    return _compact({"config": config["config"], "tokens": tokens})


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
