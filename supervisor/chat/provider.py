"""Opening the chat provider of a selected plugin: auth-only mode when it exports `provider_auth_credentials`
(exact type), else the adapter (ABI §3.1 "Selection" steps 2-3).

Auth-only mode (httpx, the network guard) is imported only when a plugin uses it: an adapter provider's chat
through the daemon stays a thin client (docs/performance.md)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from supervisor.chat.adapter import AdapterProvider
from supervisor.chat.plugin_link import PluginLink
from supervisor.chat.types import ChatError, ChatReply, Message, ModelApiLimits, OnText
from supervisor.credentials import load_credentials
from supervisor.plugin import InstalledPlugin

if TYPE_CHECKING:
    from supervisor.cli.connect import SupervisorApi

CREDENTIALS_EXPORT = "provider_auth_credentials"


class ChatProvider(Protocol):
    mode: str  # "adapter" or the auth-only api_mode
    default_model: str

    def chat(self, messages: list[Message], model: str, on_text: OnText | None = None) -> ChatReply:
        """One reply to the conversation. With `on_text`, the reply is asked for as a stream where the mode can
        stream, and each piece goes to `on_text` as it arrives (the returned reply still has the whole text)."""
        ...

    def close(self) -> None: ...


@contextlib.contextmanager
def open_provider(api: "SupervisorApi", plugin: InstalledPlugin, *, warn: Callable[[str], None],
                  limits: ModelApiLimits = ModelApiLimits(),
                  timeout_s: float | None = None) -> Iterator[ChatProvider]:
    """The provider for `plugin`. tark falls back to the adapter when auth-only set-up fails; so do we, but only
    when the plugin has the adapter exports, and saying why."""
    link = PluginLink(api, plugin, load_credentials, timeout_s=timeout_s)
    provider: ChatProvider
    if link.has(CREDENTIALS_EXPORT):
        from supervisor.chat.auth_only import AuthOnlyProvider

        try:
            provider = AuthOnlyProvider(link, limits)
        except ChatError as exc:
            if not link.has("provider_chat"):
                raise
            warn(f"{exc}\nFalling back to the plugin's own provider_chat (adapter mode).")
            provider = AdapterProvider(link)
    else:
        provider = AdapterProvider(link)
    try:
        yield provider
    finally:
        provider.close()
