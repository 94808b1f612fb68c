"""The conversation context: what the user said and what the user actually heard.

Session state, kept by the kernel from the events it sees (so every node reads
the same history and it moves with a session snapshot):

* a reply root (``turn.commit``) adds the user's message; a speculative root
  (``turn.speculate``) adds it *tentatively* -- it becomes part of the history
  only if the speculation is confirmed, and disappears if it is dropped;
* ``llm.delta`` text of a reply accumulates into the assistant's message;
* when a reply is interrupted, its assistant message is cut to the text the
  user heard before the interruption (``turn.interrupted.heard_text``), so the
  model is never told it said what the user never heard.

Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

import msgspec

__all__ = ["Conversation", "Message"]


class Message(msgspec.Struct, kw_only=True):
    """One message of the history."""

    role: str  # "user" or "assistant"
    text: str
    turn: int
    #: The assistant was cut off: ``text`` is what the user heard.
    interrupted: bool = False


class Conversation:
    """The message history of one session, with tentative (speculative) turns."""

    __slots__ = ("_assistant", "_tentative", "max_messages", "messages")

    def __init__(self, max_messages: int = 200) -> None:
        #: Committed history, oldest first.
        self.messages: list[Message] = []
        self.max_messages = max_messages
        self._tentative: dict[int, list[Message]] = {}
        self._assistant: dict[int, Message] = {}  # turn -> its assistant message (open replies)

    def user(self, turn: int, text: str, *, tentative: bool = False) -> None:
        """The user's message that reply ``turn`` answers."""
        message = Message(role="user", text=text, turn=turn)
        if tentative:
            self._tentative[turn] = [message]
        else:
            self._append(message)

    def assistant_delta(self, turn: int, text: str) -> None:
        """Reply text of ``turn`` was generated."""
        message = self._assistant.get(turn)
        if message is None:
            message = Message(role="assistant", text="", turn=turn)
            self._assistant[turn] = message
            tentative = self._tentative.get(turn)
            if tentative is not None:
                tentative.append(message)
            else:
                self._append(message)
        message.text += text

    def confirm(self, turn: int) -> None:
        """The speculation ``turn`` became the reply: its messages join the history."""
        for message in self._tentative.pop(turn, ()):
            self._append(message)

    def drop(self, turn: int) -> None:
        """The speculation ``turn`` was dropped: forget its messages."""
        self._tentative.pop(turn, None)
        self._assistant.pop(turn, None)

    def interrupted(self, turn: int, heard_text: str) -> None:
        """Reply ``turn`` was cut off: keep only what the user heard."""
        message = self._assistant.pop(turn, None)
        if message is None:
            if not heard_text:
                return
            message = Message(role="assistant", text="", turn=turn)
            self._append(message)
        message.text = heard_text
        message.interrupted = True
        if not heard_text:  # nothing was heard: as if it was never said
            self.messages = [m for m in self.messages if m is not message]

    def finished(self, turn: int) -> None:
        """Reply ``turn`` was played out: its message is final."""
        self._assistant.pop(turn, None)

    def history(self, before: int | None = None) -> list[Message]:
        """Copies of the committed messages, oldest first (only of turns before ``before``)."""
        return [
            msgspec.structs.replace(m) for m in self.messages if before is None or m.turn < before
        ]

    def _append(self, message: Message) -> None:
        self.messages.append(message)
        if len(self.messages) > self.max_messages:
            del self.messages[: len(self.messages) - self.max_messages]

    # -- moving a session ---------------------------------------------------------------

    def snapshot(self) -> list[Message]:
        """A copy of the committed history (tentative turns are not worth moving)."""
        return [msgspec.structs.replace(m) for m in self.messages]

    def restore(self, messages: list[Message]) -> None:
        self.messages = [msgspec.structs.replace(m) for m in messages[-self.max_messages :]]
        self._tentative.clear()
        self._assistant.clear()
