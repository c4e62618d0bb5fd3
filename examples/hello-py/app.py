"""hello-py: a tark provider written in Python against wit/tark.wit's provider-world (docs/writing-plugins.md).

Built by `tark plugin build examples/hello-py` (componentize-py embeds CPython: an 18 MB component). Each import
below (storage, env, log) reaches the same capability handler as the core ABI's tark:* import of the same name.
"""

from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.provider_plugin import ChatResponse, Message
from wit_world.imports import env, log, storage


class ProviderPlugin(exports.ProviderPlugin):
    def name(self) -> str:
        return "hello-py"

    def models(self) -> List[str]:
        return ["hello-1", "hello-2"]

    def chat(self, messages: List[Message], model: str) -> ChatResponse:
        said = [message.content for message in messages if message.role == "user"]
        if not said:
            raise Err("there is no user message to answer")
        turns = int(storage.get("turns") or "0") + 1
        storage.set("turns", str(turns))
        greeting = env.get("HELLO_GREETING") or "Hello from Python!"
        log.info(f"turn {turns} with {model}")
        answer = f"{greeting} You said: {said[-1]} (turn {turns})"
        return ChatResponse(content=answer, model=model, usage_tokens=len(answer.split()))
