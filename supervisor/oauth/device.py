"""The device authorization grant (RFC 8628); tark has none.

Request a device code, show the user where to enter it, then poll the token endpoint at the server's interval
(never faster than `min_interval_s`), adding `slow_down_step_s` on every `slow_down`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import attrs
import httpx

from policy.manifest import OAuthConfig
from supervisor.oauth.callback import format_seconds
from supervisor.oauth.errors import OAuthError, quoted
from supervisor.oauth.tokens import DEVICE_GRANT, json_object, parse_tokens, post_form, request_failed

DEFAULT_INTERVAL_S = 5.0  # RFC 8628 §3.2 when the server names none
DEFAULT_EXPIRES_IN_S = 900.0
SLOW_DOWN_STEP_S = 5.0  # RFC 8628 §3.5
DEFAULT_MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 600.0


@attrs.frozen
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval_s: float
    expires_in_s: float


@attrs.frozen
class PollSettings:
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    slow_down_step_s: float = SLOW_DOWN_STEP_S
    timeout_s: float | None = None  # None: until the device code expires


def request_device_code(client: httpx.Client, config: OAuthConfig) -> DeviceAuthorization:
    if not config.device_authorization_url:
        raise OAuthError("OAuth flow 'device_flow' needs device_authorization_url in the plugin's [oauth] section")
    form = {"client_id": config.client_id, "scope": " ".join(config.scopes)}
    response = post_form(client, config.device_authorization_url, form, "Device authorization request")
    if not response.is_success:
        body = response.content.decode("utf-8", "replace").strip()
        raise OAuthError(f"Device authorization request failed ({response.status_code}): {quoted(body)}")
    document = json_object(response)
    if document is None:
        raise OAuthError("Failed to parse device authorization response: expected a JSON object")
    return _device_authorization(document)


def _device_authorization(document: dict[str, Any]) -> DeviceAuthorization:
    def text(key: str, *aliases: str, required: bool = True) -> str | None:
        for name in (key, *aliases):
            value = document.get(name)
            if isinstance(value, str) and value:
                return value
        if required:
            raise OAuthError(f"Failed to parse device authorization response: no {key} string")
        return None

    def seconds(key: str, default: float) -> float:
        value = document.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise OAuthError(f"Failed to parse device authorization response: {key} is not a number of seconds")
        return float(value)

    uri = text("verification_uri", "verification_url")  # Google spells it verification_url
    complete = text("verification_uri_complete", required=False)
    for link in (uri, complete):
        if link is not None and not link.startswith(("https://", "http://")):
            raise OAuthError(f"Failed to parse device authorization response: {quoted(link)} is not an http(s) URL")
    return DeviceAuthorization(
        device_code=text("device_code"),  # type: ignore[arg-type]
        user_code=text("user_code"),  # type: ignore[arg-type]
        verification_uri=uri,  # type: ignore[arg-type]
        verification_uri_complete=complete,
        interval_s=min(seconds("interval", DEFAULT_INTERVAL_S), MAX_INTERVAL_S),
        expires_in_s=seconds("expires_in", DEFAULT_EXPIRES_IN_S),
    )


def poll_for_tokens(
    client: httpx.Client,
    config: OAuthConfig,
    device: DeviceAuthorization,
    settings: PollSettings = PollSettings(),
    on_poll: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Poll until the user approves (the token response), denies, or the code expires (OAuthError)."""
    expired_locally = settings.timeout_s is None or device.expires_in_s <= settings.timeout_s
    limit = device.expires_in_s if expired_locally else settings.timeout_s
    assert limit is not None
    deadline = time.monotonic() + limit
    interval = max(device.interval_s, settings.min_interval_s)
    form = {"grant_type": DEVICE_GRANT, "device_code": device.device_code, "client_id": config.client_id}
    if config.client_secret:
        form["client_secret"] = config.client_secret
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if expired_locally:
                raise OAuthError("The device code expired before the sign-in was completed. Please try again.")
            raise OAuthError(
                f"Authentication timeout - no response after {format_seconds(limit)} seconds. Please try again."
            )
        time.sleep(min(interval, remaining))
        on_poll()
        response = post_form(client, config.token_url, form, "Token request")
        if response.is_success:
            return parse_tokens(response)
        error = (json_object(response) or {}).get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval = min(interval + settings.slow_down_step_s, MAX_INTERVAL_S)
            continue
        if error == "access_denied":
            raise OAuthError("The sign-in request was denied (access_denied).")
        if error == "expired_token":
            raise OAuthError("The device code expired before the sign-in was completed (expired_token). "
                             "Please try again.")
        raise request_failed(response)
