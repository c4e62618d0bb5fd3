"""Calls into one provider plugin for the chat, in instances that first got the user's stored credentials.

Credentials (`tark auth` stores them; supervisor.credentials) go to `provider_auth_init` when the plugin exports
it, in a named instance that the following export calls of the same operation share and that ends with the
operation (one chat turn, or the start-up calls). Without credentials every call gets a fresh instance, as in
tark. See docs/chat.md for why an instance per operation rather than one per session.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import TYPE_CHECKING, Callable, Iterator

from policy.abi import CORE_SIGNATURES, Signature
from supervisor.chat.types import ChatError, excerpt
from supervisor.plugin import InstalledPlugin
from supervisor.call_api import CallResult

if TYPE_CHECKING:
    from supervisor.cli.connect import SupervisorApi

FRESH = "fresh"
AUTH_INIT = "provider_auth_init"

SIGNATURES: dict[str, Signature] = {
    name: CORE_SIGNATURES[name]
    for name in ("provider_info", "provider_models", "provider_auth_credentials", "provider_auth_init", "provider_chat")
}

# tark's message on a negative return (ABI §2); the plugin's {"error": ...} diagnostics are appended
NEGATIVE_RETURN = {
    "provider_chat": "Provider chat failed with error code: {code}",
    "provider_auth_init": "Function provider_auth_init failed with error code: {code}",
}


class PluginLink:
    """One provider plugin: which ABI exports it has, and calls that turn every failure into a ChatError."""

    def __init__(self, api: "SupervisorApi", plugin: InstalledPlugin,
                 load_credentials: Callable[[InstalledPlugin], str | None], *,
                 timeout_s: float | None = None) -> None:
        self.api = api
        self.plugin = plugin
        self.timeout_s = timeout_s  # each export call's deadline (None: the plugin's limit)
        self._exports = {name: (tuple(params), tuple(results))
                         for name, (params, results) in api.exports(plugin.name).items()}
        self._credentials = load_credentials(plugin) if self.has(AUTH_INIT) else None

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def feeds_credentials(self) -> bool:
        return self._credentials is not None

    def has(self, export: str) -> bool:
        """The export exists with the exact type the ABI gives it (tark detects optional exports this way)."""
        return self._exports.get(export) == SIGNATURES[export]

    @contextlib.contextmanager
    def instance(self) -> Iterator[str]:
        """The instance name for the calls of one operation; with credentials, they were fed to it first."""
        if self._credentials is None:
            yield FRESH
            return
        name = f"chat-{secrets.token_hex(6)}"
        try:
            result = self.api.call(self.name, AUTH_INIT, [self._credentials], instance=name,
                                   timeout_s=self.timeout_s)
            if result.ok and result.ret is not None and result.ret < 0:
                raise ChatError(f"Plugin '{self.name}' rejected the stored credentials: "
                                f"{_negative(AUTH_INIT, result)}. Sign in again with: tark auth {self.name}")
            self._raise_for_error(result)
            yield name
        finally:
            self.api.end_instance(self.name, name)

    def output(self, export: str, args: list[str], instance: str) -> tuple[str, CallResult]:
        """Call `export` and return its output text, or raise a ChatError naming the failure."""
        result = self.api.call(self.name, export, args, instance=instance, timeout_s=self.timeout_s)
        self._raise_for_error(result)
        if result.ret is not None and result.ret < 0:
            raise ChatError(_negative(export, result))
        return result.output or "", result

    def _raise_for_error(self, result: CallResult) -> None:
        if result.ok:
            return
        if result.error_kind == "trap":
            raise ChatError(f"Plugin '{self.name}' crashed during '{result.export}': {result.error}. "
                            "This is a plugin bug, not a tark bug.")
        raise ChatError(f"Plugin '{self.name}' failed during '{result.export}' ({result.error_kind}): {result.error}")


def _negative(export: str, result: CallResult) -> str:
    message = NEGATIVE_RETURN.get(export, "Function {export} returned error code: {code}")
    text = message.format(export=export, code=result.ret)
    detail = _diagnostics(result.output)
    return f"{text} ({detail})" if detail else text


def _diagnostics(output: str | None) -> str | None:
    """The `error` of the `{"error": ...}` a plugin may leave in its buffer with a negative return."""
    if not output:
        return None
    try:
        data = json.loads(output)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        return "plugin says: " + excerpt(error if isinstance(error, str) else json.dumps(error))
    return None
