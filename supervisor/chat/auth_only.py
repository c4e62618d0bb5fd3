"""Auth-only mode (ABI §3.1): the plugin only hands out credentials (`provider_auth_credentials`) and tark talks
to the model API itself. This runtime supports `api_mode = "openai_compat"`; native Gemini
(`cloud_code_assist`, tark's default mode) is refused with a clear error.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from supervisor.consent.live import Consent
from supervisor.chat.openai_compat import ModelApiLimits, OpenAICompatClient, parse_completion
from supervisor.chat.plugin_link import PluginLink
from supervisor.chat.types import ChatError, ChatReply, Message, json_kind

CREDENTIALS_EXPORT = "provider_auth_credentials"
OPENAI_COMPAT = "openai_compat"
CLOUD_CODE_ASSIST = "cloud_code_assist"
DEFAULT_MODEL = "gpt-4"


@attrs.frozen
class AuthCredentials:
    access_token: str
    project_id: str | None = None
    api_mode: str = CLOUD_CODE_ASSIST
    endpoint: str | None = None
    custom_headers: dict[str, str] = attrs.field(factory=dict)


def parse_auth_credentials(text: str) -> AuthCredentials:
    bad = "Failed to parse auth credentials JSON: "
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ChatError(bad + str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise ChatError(bad + f"expected an object, got {json_kind(data)}")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ChatError(bad + "'access_token' must be a non-empty string")
    for key in ("project_id", "endpoint"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ChatError(bad + f"'{key}' must be a string or null")
    mode = data.get("api_mode")
    if mode is None:
        mode = CLOUD_CODE_ASSIST
    if not isinstance(mode, str):
        raise ChatError(bad + "'api_mode' must be a string")
    headers: Any = data.get("custom_headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ChatError(bad + "'custom_headers' must be an object of strings")
    return AuthCredentials(access_token=token, project_id=data.get("project_id"), api_mode=mode,
                           endpoint=data.get("endpoint"), custom_headers=dict(headers))


def require_openai_compat(credentials: AuthCredentials, plugin: str) -> str:
    """The endpoint of usable credentials; any mode other than openai_compat is an error."""
    if credentials.api_mode == CLOUD_CODE_ASSIST:
        raise ChatError(f"Plugin provider '{plugin}' uses api_mode '{CLOUD_CODE_ASSIST}' (native Gemini), which "
                        f"this runtime does not support yet; only '{OPENAI_COMPAT}' auth-only providers work")
    if credentials.api_mode != OPENAI_COMPAT:
        raise ChatError(f"Unsupported api_mode '{credentials.api_mode[:100]}' from plugin provider '{plugin}' "
                        f"(expected '{OPENAI_COMPAT}' or '{CLOUD_CODE_ASSIST}')")
    if not credentials.endpoint:
        raise ChatError(f"Plugin provider '{plugin}' uses api_mode '{OPENAI_COMPAT}' but its credentials have "
                        "no 'endpoint'")
    return credentials.endpoint


class AuthOnlyProvider:
    """Credentials come from the plugin afresh for every turn (tokens expire); the chat goes over HTTP."""

    mode = OPENAI_COMPAT
    default_model = DEFAULT_MODEL

    def __init__(self, link: PluginLink, limits: ModelApiLimits = ModelApiLimits()) -> None:
        self._link = link
        first = self._fetch()  # fail at start-up, before the user types anything
        self._client = OpenAICompatClient(link.name, Consent().grants(link.plugin), limits)
        try:
            self._client.allowed_url(require_openai_compat(first[0], link.name))
        except BaseException:
            self._client.close()
            raise
        self._first: tuple[AuthCredentials, int | None] | None = first

    def _fetch(self) -> tuple[AuthCredentials, int | None]:
        with self._link.instance() as instance:
            text, result = self._link.output(CREDENTIALS_EXPORT, [], instance)
        return parse_auth_credentials(text), result.worker_pid

    def chat(self, messages: list[Message], model: str) -> ChatReply:
        credentials, worker_pid = self._first or self._fetch()
        self._first = None
        endpoint = require_openai_compat(credentials, self._link.name)
        data = self._client.complete(endpoint=endpoint, token=credentials.access_token,
                                     headers=credentials.custom_headers, model=model, messages=messages)
        return parse_completion(data, model=model, worker_pid=worker_pid)

    def close(self) -> None:
        self._client.close()
