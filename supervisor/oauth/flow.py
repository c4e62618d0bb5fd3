"""`tark auth NAME` end to end: run the plugin's OAuth flow, let the plugin shape the credentials, store them
(0600 from creation, atomic), and hand them to the plugin's auth-init export.

Progress goes through `say` so the flow knows nothing of the terminal; the browser is opened only through the
`open_browser` callable the CLI passes (None: never).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs

from policy.manifest import OAuthConfig
from supervisor.credentials import credentials_path, save_credentials
from supervisor.oauth import plugin_calls
from supervisor.oauth.callback import CallbackListener, format_seconds
from supervisor.oauth.device import PollSettings, poll_for_tokens, request_device_code
from supervisor.oauth.errors import OAuthError
from supervisor.oauth.pkce import authorization_url, challenge_s256, make_state, make_verifier, redirect_target
from supervisor.oauth.targets import AuthTarget
from supervisor.oauth.tokens import callback_input, default_credentials_text, exchange_code, http_client

DEFAULT_PKCE_TIMEOUT_S = 120.0

Say = Callable[[str], None]


@attrs.frozen
class FlowOptions:
    open_browser: Callable[[str], bool] | None = None  # returns whether a browser was started
    timeout_s: float | None = None  # PKCE: 120 s by default; device flow: until the code expires
    poll: PollSettings = PollSettings()


@attrs.frozen
class AuthResult:
    credentials_path: Path
    init_export: str | None  # the auth-init export that accepted the credentials, if the plugin has one


def resolved_config(target: AuthTarget, environ: Mapping[str, str]) -> OAuthConfig:
    oauth = target.plugin.manifest.oauth
    if oauth is None:
        raise OAuthError(f"Plugin '{target.plugin.name}' has no OAuth configuration")
    config = oauth.expanded(environ)
    unresolved = config.unresolved_fields()
    if unresolved:
        raise OAuthError(f"OAuth config has unresolved environment placeholders: {', '.join(unresolved)}")
    return config


def authenticate(target: AuthTarget, api: plugin_calls.Api, say: Say, options: FlowOptions = FlowOptions(),
                 environ: Mapping[str, str] | None = None) -> AuthResult:
    env = os.environ if environ is None else environ
    config = resolved_config(target, env)
    credentials_path(target.plugin, env)  # a bad credentials_path fails now, not after the user signed in
    say(f"Authenticating with {target.display_name}...")
    text = obtain_credentials_text(config, api, target.plugin.name, say, options)
    path = save_credentials(target.plugin, text, env)
    try:
        init_export = plugin_calls.init_with_credentials(api, target.plugin.name, text)
    except OAuthError as exc:
        raise OAuthError(f"{exc} (the credentials were saved to {path}, but the plugin did not accept them)") from None
    return AuthResult(credentials_path=path, init_export=init_export)


def obtain_credentials_text(config: OAuthConfig, api: plugin_calls.Api, name: str, say: Say,
                            options: FlowOptions) -> str:
    """Run the flow and shape the tokens as tark stores them: the plugin's `auth_process_tokens` output when the
    manifest names a callback, else pretty key-sorted JSON with `expires_at`."""
    with http_client() as client:
        if config.flow == "pkce":
            tokens = _pkce(client, config, say, options)
        elif config.flow == "device_flow":
            tokens = _device(client, config, say, options)
        else:
            raise OAuthError(f"Unknown OAuth flow '{config.flow}'; use pkce or device_flow")
    if config.process_tokens_callback:
        return plugin_calls.process_tokens(api, name, callback_input(tokens))
    return default_credentials_text(tokens)


def _pkce(client: Any, config: OAuthConfig, say: Say, options: FlowOptions) -> dict[str, Any]:
    target = redirect_target(config.redirect_uri)
    verifier = make_verifier()
    state = make_state() if config.use_state else None
    url = authorization_url(config, challenge_s256(verifier), state)
    timeout_s = options.timeout_s if options.timeout_s is not None else DEFAULT_PKCE_TIMEOUT_S
    with CallbackListener(target, state) as listener:
        if options.open_browser is not None:
            say("Opening browser for authentication...")
            options.open_browser(url)
            say("If the browser doesn't open automatically, visit:")
        else:
            say("Open this URL in a browser to authenticate:")
        say(url)
        say(f"Waiting for the sign-in to complete (up to {format_seconds(timeout_s)} seconds)...")
        code = listener.wait(timeout_s)
    say("Exchanging authorization code for tokens...")
    return exchange_code(client, config, code, verifier)


def _device(client: Any, config: OAuthConfig, say: Say, options: FlowOptions) -> dict[str, Any]:
    device = request_device_code(client, config)
    say(f"To sign in, visit {device.verification_uri} and enter the code {device.user_code}")
    if device.verification_uri_complete:
        say(f"Or open: {device.verification_uri_complete}")
        if options.open_browser is not None:
            options.open_browser(device.verification_uri_complete)
    say("Waiting for you to approve the sign-in...")
    poll = attrs.evolve(options.poll, timeout_s=options.timeout_s)
    return poll_for_tokens(client, config, device, poll)
