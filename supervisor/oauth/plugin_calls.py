"""The plugin side of authentication: each export runs in the plugin's own worker through the supervisor.

Texts follow tark-core-abi.md §2 (the message per export on a negative return); a plugin's diagnostics (the
`{"error": ...}` it wrote before returning -len) are appended when present.
"""

from __future__ import annotations

from typing import Protocol

from supervisor.oauth.errors import OAuthError, quoted
from supervisor.call_api import CallRefused, CallResult

PROVIDER_STATUS = {0: "not required", 1: "authenticated", 2: "not authenticated", 3: "expired"}
LEGACY_STATUS = {0: "not authenticated", 1: "authenticated", 2: "expired"}


class Api(Protocol):
    def call(self, name: str, export: str, args: list[str], *, timeout_s: float | None = None,
             instance: str = "fresh") -> CallResult: ...

    def exports(self, name: str) -> dict[str, tuple[list[str], list[str]]]: ...


def _run(api: Api, plugin: str, export: str, args: list[str]) -> CallResult:
    try:
        result = api.call(plugin, export, args)
    except CallRefused as exc:
        raise OAuthError(f"Plugin '{plugin}': {exc}") from None
    if result.error is not None:
        raise OAuthError(f"Plugin '{plugin}' failed in '{export}' ({result.error_kind}): {quoted(result.error)}")
    return result


def _with_diagnostics(message: str, result: CallResult) -> str:
    return f"{message}: {quoted(result.output)}" if result.output else message


def process_tokens(api: Api, plugin: str, tokens_json: str) -> str:
    """`auth_process_tokens` output, stored verbatim; the input itself when the plugin lacks the export."""
    if "auth_process_tokens" not in api.exports(plugin):
        return tokens_json
    result = _run(api, plugin, "auth_process_tokens", [tokens_json])
    assert result.ret is not None
    if result.ret < 0:
        raise OAuthError(_with_diagnostics("Plugin auth_process_tokens returned error", result))
    if not result.output:
        raise OAuthError("Plugin auth_process_tokens returned no credentials to store")
    return result.output


def init_with_credentials(api: Api, plugin: str, credentials: str) -> str | None:
    """Hand the stored credentials to the plugin (`provider_auth_init`, else legacy `init_with_credentials`).
    Returns the export called, None when the plugin has neither."""
    exports = api.exports(plugin)
    for export in ("provider_auth_init", "init_with_credentials"):
        if export in exports:
            result = _run(api, plugin, export, [credentials])
            assert result.ret is not None
            if result.ret < 0:
                message = (f"Function {export} failed with error code: {result.ret}" if export == "provider_auth_init"
                           else "Failed to initialize plugin with credentials")
                raise OAuthError(_with_diagnostics(message, result))
            return export
    return None


def plugin_status(api: Api, plugin: str) -> str | None:
    """The plugin's own view (`provider_auth_status`, else legacy `status`); None when it exports neither."""
    exports = api.exports(plugin)
    for export, meaning, fallback in (("provider_auth_status", PROVIDER_STATUS, "not authenticated"),
                                      ("status", LEGACY_STATUS, "not authenticated")):
        if export in exports:
            result = _run(api, plugin, export, [])
            return meaning.get(result.ret if result.ret is not None else -1, fallback)
    return None


def display_name(api: Api, plugin: str) -> str | None:
    if "display_name" not in api.exports(plugin):
        return None
    result = _run(api, plugin, "display_name", [])
    if result.ret is None or result.ret < 0 or not result.output:
        raise OAuthError("Failed to get display name from plugin")
    return quoted(result.output, 80)


def logout(api: Api, plugin: str) -> str | None:
    """Tell the plugin to forget its credentials; returns the export called, None when it has none."""
    exports = api.exports(plugin)
    if "provider_auth_logout" in exports:
        result = _run(api, plugin, "provider_auth_logout", [])
        if result.ret is not None and result.ret < 0:
            raise OAuthError(_with_diagnostics("Provider logout failed", result))
        return "provider_auth_logout"
    if "logout" in exports:
        _run(api, plugin, "logout", [])  # tark ignores its result
        return "logout"
    return None
