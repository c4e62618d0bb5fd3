"""{name}: a tark channel plugin written in Python (wit/tark.wit channel-world; docs/writing-plugins.md).

Each webhook body becomes one inbound message (returned by the next poll); `send` just logs.
"""

import json
from typing import List

from wit_world import exports
from wit_world.exports.channel_plugin import ChannelInfo, InboundMessage
from wit_world.imports import log, storage


class ChannelPlugin(exports.ChannelPlugin):
    def info(self) -> ChannelInfo:
        return ChannelInfo(id="{name}", display_name="{name}", description="Webhook bodies become messages",
                           supports_streaming=False, supports_edits=False)

    def start(self) -> None:
        log.info("started")

    def stop(self) -> None:
        log.info("stopped")

    def poll(self) -> List[InboundMessage]:
        pending = json.loads(storage.get("pending") or "[]")
        storage.delete("pending")
        return [InboundMessage(conversation_id="webhook", user_id="webhook", text=text, metadata_json="{{}}")
                for text in pending]

    def handle_webhook(self, request_json: str) -> str:
        request = json.loads(request_json)
        pending = json.loads(storage.get("pending") or "[]")
        pending.append(str(request.get("body", "")))
        storage.set("pending", json.dumps(pending))
        return json.dumps({{"status": 200, "headers": [], "body": json.dumps({{"queued": True}}), "messages": []}})

    def send(self, request_json: str) -> str:
        request = json.loads(request_json)
        log.info(f"send to {{request.get('conversation_id')}}: {{request.get('text')}}")
        return json.dumps({{"success": True, "message_id": request.get("message_id") or "1", "error": None}})
