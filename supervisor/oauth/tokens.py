"""Token endpoint requests and the two credential texts of tark-core-abi.md §4.

- `callback_input`: the compact JSON handed to a plugin's `auth_process_tokens`.
- `default_credentials_text`: what is stored when the manifest has no `process_tokens_callback`: the token
  response as pretty, key-sorted JSON plus `expires_at` (Unix seconds, null when the server gave no lifetime).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import httpx

from policy import tark_json
from policy.manifest import OAuthConfig
from supervisor.oauth.errors import OAuthError, quoted

HTTP_TIMEOUT_S = 30.0
MAX_RESPONSE_BYTES = 256 * 1024
CALLBACK_FIELDS = ("access_token", "refresh_token", "id_token", "expires_in", "token_type", "scope")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def http_client() -> httpx.Client:
    # redirects are not followed: a token endpoint that redirects is misconfigured, and a POST body with the
    # code and verifier must not be replayed elsewhere
    return httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=False, headers={"Accept": "application/json"})


def post_form(client: httpx.Client, url: str, form: Mapping[str, str], what: str) -> httpx.Response:
    try:
        response = client.post(url, data=dict(form))
    except httpx.HTTPError as exc:
        raise OAuthError(f"{what} to {url} failed: {quoted(str(exc)) or type(exc).__name__}") from None
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise OAuthError(f"{what} to {url} returned more than {MAX_RESPONSE_BYTES} bytes")
    return response


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        document = json.loads(response.content)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def request_failed(response: httpx.Response) -> OAuthError:
    body = response.content.decode("utf-8", "replace").strip()
    return OAuthError(f"Token request failed ({response.status_code}): {quoted(body)}")


def parse_tokens(response: httpx.Response) -> dict[str, Any]:
    """The token response of a successful request (2xx, a JSON object with a non-empty string access_token)."""
    if not response.is_success:
        raise request_failed(response)
    document = json_object(response)
    if document is None:
        raise OAuthError("Failed to parse token response: expected a JSON object")
    token = document.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthError("Failed to parse token response: no access_token string")
    expires_in = document.get("expires_in")
    if expires_in is not None and not _is_seconds(expires_in):
        raise OAuthError(f"Failed to parse token response: expires_in is not a number of seconds ({quoted(repr(expires_in))})")
    return document


def exchange_code(client: httpx.Client, config: OAuthConfig, code: str, verifier: str) -> dict[str, Any]:
    form = {
        "client_id": config.client_id,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": config.redirect_uri,
        "code_verifier": verifier,
    }
    if config.client_secret:
        form["client_secret"] = config.client_secret
    return parse_tokens(post_form(client, config.token_url, form, "Token request"))


def _is_seconds(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value >= 0
    return isinstance(value, str) and value.isdigit()


def expires_at(tokens: Mapping[str, Any], now: float) -> int | None:
    value = tokens.get("expires_in")
    if value is None or not _is_seconds(value):
        return None
    return int(now + float(value))


def callback_input(tokens: Mapping[str, Any]) -> str:
    return tark_json.dumps({field: tokens.get(field) for field in CALLBACK_FIELDS})


def default_credentials_text(tokens: Mapping[str, Any], now: float | None = None) -> str:
    stamped = dict(tokens)
    stamped["expires_at"] = expires_at(tokens, time.time() if now is None else now)
    return json.dumps(stamped, indent=2, sort_keys=True, ensure_ascii=False)
