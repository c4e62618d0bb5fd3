"""PKCE (RFC 7636) values and the authorization URL (tark-core-abi.md §4 "Flow", fixing weakness 27).

Every key and value of the query is percent-encoded, an `auth_url` that already has a query gets `&`, not a
second `?`, and `extra_params` may not replace the parameters that make the flow safe.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
from urllib.parse import quote, urlsplit, urlunsplit

import attrs

from policy.manifest import OAuthConfig
from supervisor.oauth.errors import OAuthError

VERIFIER_LENGTH = 128
VERIFIER_ALPHABET = string.ascii_letters + string.digits
STATE_BYTES = 32
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
# set by the flow itself; an extra_params entry with one of these names would weaken or break it
RESERVED_PARAMS = frozenset(
    {"response_type", "client_id", "redirect_uri", "scope", "code_challenge", "code_challenge_method", "state"}
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_verifier() -> str:
    return "".join(secrets.choice(VERIFIER_ALPHABET) for _ in range(VERIFIER_LENGTH))


def challenge_s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def make_state() -> str:
    return _b64url(secrets.token_bytes(STATE_BYTES))


def authorization_url(config: OAuthConfig, challenge: str, state: str | None) -> str:
    """`auth_url` plus the authorization request: response_type, client_id, redirect_uri, scope (space-joined),
    code_challenge, code_challenge_method=S256, state (when `use_state`), then `extra_params` in manifest order."""
    clashes = sorted(RESERVED_PARAMS & set(config.extra_params))
    if clashes:
        raise OAuthError(f"OAuth extra_params may not set {', '.join(clashes)}: tark sets them for the PKCE flow")
    params = [
        ("response_type", "code"),
        ("client_id", config.client_id),
        ("redirect_uri", config.redirect_uri),
        ("scope", " ".join(config.scopes)),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    if state is not None:
        params.append(("state", state))
    params.extend(config.extra_params.items())
    parts = urlsplit(config.auth_url)
    added = "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in params)
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@attrs.frozen
class RedirectTarget:
    """Where the local listener waits for the browser: 127.0.0.1:<port>, answering only `path`."""

    port: int
    path: str


def redirect_target(redirect_uri: str) -> RedirectTarget:
    parts = urlsplit(redirect_uri)
    try:
        port = parts.port
    except ValueError:
        raise OAuthError("Invalid port in redirect_uri") from None
    if port is None:
        raise OAuthError(f"Could not extract port from redirect_uri: {redirect_uri}")
    if port == 0:
        raise OAuthError("Invalid port in redirect_uri")
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise OAuthError(
            f"redirect_uri must be http://127.0.0.1:<port>/... or http://localhost:<port>/... so that tark's "
            f"local listener receives the code; got {redirect_uri}"
        )
    return RedirectTarget(port=port, path=parts.path or "/")
