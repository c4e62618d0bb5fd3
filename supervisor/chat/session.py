"""A conversation: the optional system prompt and the turns so far; every turn sends all of them."""

from __future__ import annotations

from supervisor.chat.provider import ChatProvider
from supervisor.chat.types import ChatReply, Message, OnText


class Conversation:
    def __init__(self, provider: ChatProvider, model: str, system: str | None = None) -> None:
        self.provider = provider
        self.model = model
        self._system = (Message("system", system),) if system else ()
        self._turns: tuple[Message, ...] = ()

    @property
    def messages(self) -> tuple[Message, ...]:
        return self._system + self._turns

    def send(self, text: str, on_text: OnText | None = None) -> ChatReply:
        """One turn, streamed to `on_text` if given. A failed turn leaves the history as it was (also when part
        of the reply was already streamed), so the user can simply try again."""
        asked = self._turns + (Message("user", text),)
        reply = self.provider.chat(list(self._system + asked), self.model, on_text)
        self._turns = asked + (Message("assistant", reply.text),)
        return reply

    def reset(self) -> None:
        """Forget the turns; the system prompt stays."""
        self._turns = ()
