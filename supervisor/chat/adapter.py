"""Adapter mode (ABI §3.1): the plugin itself answers chats through `provider_chat`.

Start-up reads `provider_info` and `provider_models` (default model: the first id, else `default`); each turn
sends the whole conversation as `[{"role","content"}]` and the model id, and expects
`{"text", "usage": {"input_tokens", "output_tokens"}, "finish_reason"}` back.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from policy import tark_json
from supervisor.chat.plugin_link import PluginLink
from supervisor.chat.types import ChatError, ChatReply, Message, OnText, Usage, count, json_kind

ADAPTER_EXPORTS = ("provider_info", "provider_models", "provider_chat")
DEFAULT_MODEL = "default"


@attrs.frozen
class ProviderInfo:
    id: str
    display_name: str


def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ChatError(f"Failed to parse {what} JSON: {str(exc)[:200]}") from None


def parse_info(text: str) -> ProviderInfo:
    data = _load(text, "provider info")
    if not isinstance(data, dict):
        raise ChatError(f"Failed to parse provider info JSON: expected an object, got {json_kind(data)}")
    for key in ("id", "display_name"):
        if not isinstance(data.get(key), str):
            raise ChatError(f"Failed to parse provider info JSON: '{key}' must be a string")
    return ProviderInfo(id=data["id"], display_name=data["display_name"])


def parse_models(text: str) -> list[str]:
    data = _load(text, "models")
    if not isinstance(data, list):
        raise ChatError(f"Failed to parse models JSON: expected an array, got {json_kind(data)}")
    ids = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise ChatError(f"Failed to parse models JSON: entry {index} has no string 'id'")
        ids.append(item["id"])
    return ids


def parse_chat_response(text: str, *, plugin: str, model: str, worker_pid: int | None) -> ChatReply:
    data = _load(text, "chat response")
    if not isinstance(data, dict):
        raise ChatError(f"Failed to parse chat response JSON: expected an object, got {json_kind(data)}")
    reply_text = data.get("text")
    if not isinstance(reply_text, str):
        raise ChatError("Failed to parse chat response JSON: 'text' must be a string")
    usage = None
    if data.get("usage") is not None:
        raw = data["usage"]
        if not isinstance(raw, dict) or not all(count(raw.get(k)) for k in ("input_tokens", "output_tokens")):
            raise ChatError("Failed to parse chat response JSON: 'usage' needs 'input_tokens' and 'output_tokens' "
                            "as non-negative integers")
        usage = Usage(raw["input_tokens"], raw["output_tokens"])
    finish_reason = data.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise ChatError("Failed to parse chat response JSON: 'finish_reason' must be a string")
    if not reply_text.strip():
        raise ChatError(f"Plugin provider '{plugin}' returned an empty response for model '{model}'. "
                        "Check plugin auth status and allowed HTTP domains.")
    return ChatReply(text=reply_text, usage=usage, finish_reason=finish_reason, worker_pid=worker_pid)


class AdapterProvider:
    mode = "adapter"

    def __init__(self, link: PluginLink) -> None:
        missing = [e for e in ADAPTER_EXPORTS if not link.has(e)]
        if missing:
            raise ChatError(
                f"Plugin '{link.name}' cannot chat: it exports neither provider_auth_credentials (auth-only mode) "
                f"nor all of {', '.join(ADAPTER_EXPORTS)} (missing or of the wrong type: {', '.join(missing)})")
        self._link = link
        with link.instance() as instance:
            self.info = parse_info(link.output("provider_info", [], instance)[0])
            self.models = parse_models(link.output("provider_models", [], instance)[0])
        self.default_model = self.models[0] if self.models else DEFAULT_MODEL

    def chat(self, messages: list[Message], model: str, on_text: OnText | None = None) -> ChatReply:
        """provider_chat answers whole (the ABI has no streaming export), so `on_text` is not used."""
        payload = tark_json.dumps([m.to_json() for m in messages])
        with self._link.instance() as instance:
            text, result = self._link.output("provider_chat", [payload, model], instance)
        return parse_chat_response(text, plugin=self._link.name, model=model, worker_pid=result.worker_pid)

    def close(self) -> None:
        pass
