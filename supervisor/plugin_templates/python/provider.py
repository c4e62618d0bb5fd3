"""{name}: a tark provider plugin written in Python (wit/tark.wit provider-world; docs/writing-plugins.md).

`tark plugin build` turns this file into {wasm} with componentize-py. The `wit_world` package is generated from
wit/tark.wit at build time; run `componentize-py -d wit/tark.wit -w provider-world bindings .` to see it.
"""

from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.provider_plugin import ChatResponse, Message
from wit_world.imports import log, storage


class ProviderPlugin(exports.ProviderPlugin):
    def name(self) -> str:
        return "{name}"

    def models(self) -> List[str]:
        return ["{name}-1"]

    def chat(self, messages: List[Message], model: str) -> ChatResponse:
        said = [message.content for message in messages if message.role == "user"]
        if not said:
            raise Err("there is no user message to answer")
        turns = int(storage.get("turns") or "0") + 1
        storage.set("turns", str(turns))  # needs capabilities.storage in plugin.toml
        log.info(f"turn {{turns}}: {{len(messages)}} messages")
        answer = f"Hello from Python! You said: {{said[-1]}}"
        return ChatResponse(content=answer, model=model, usage_tokens=len(answer.split()))
