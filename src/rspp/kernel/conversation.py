"""The conversation context: what the user said and what the user actually heard.

Session state, kept by the kernel from the events it sees (so every node reads
the same history and it moves with a session snapshot):

* a reply root (``turn.commit``) adds the user's message; a speculative root
  (``turn.speculate``) adds it *tentatively* -- it becomes part of the history
  only if the speculation is confirmed, and disappears if it is dropped;
* a reply's text is recorded once, from the reply's *source*: the node that
  emitted the first ``llm.delta`` of that turn (the LLM). Deltas that other
  nodes emit for the same turn -- a node that rewrites or filters the text on
  its way to the TTS -- are transformations of the same reply, not more of it;
* when the reply ends, its assistant message joins the history: all of the
  source's text if it played out, and, if it was cut off, the source's text
  truncated to the number of words the user heard (``heard_text`` comes from
  the audio that was played, which may have passed through such a rewriting
  node), so the model is never told it said what the user never heard. A reply
  of which nothing was heard leaves no message.

The text of a reply in progress is kept as a list of pieces and joined once,
when it ends: no per-delta string building. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["Conversation", "ConversationSnapshot", "Message", "OpenReply", "cut_to_words"]

_WORDS = re.compile(r"\S+\s*")


class Message(msgspec.Struct, kw_only=True):
    """One message of the history."""

    role: str  # "user" or "assistant"
    text: str
    turn: int
    #: The assistant was cut off: ``text`` is what the user heard.
    interrupted: bool = False


class OpenReply(msgspec.Struct, kw_only=True):
    """A reply in progress: its source node and the text it produced so far."""

    turn: int
    source: str
    text: str


class ConversationSnapshot(msgspec.Struct, kw_only=True):
    """The conversation's part of a session snapshot."""

    messages: list[Message] = msgspec.field(default_factory=list)
    #: The reply in progress, if it produced text.
    reply: OpenReply | None = None
    #: The user's message of a held speculation (tentative).
    tentative: Message | None = None


def cut_to_words(text: str, heard: str) -> str:
    """``text`` cut to as many words as ``heard`` has (keeping ``text``'s own spelling)."""
    n = len(heard.split())
    if n == 0:
        return ""
    words = _WORDS.findall(text)
    return "".join(words[:n]).rstrip() if n < len(words) else text


class _Reply:
    __slots__ = ("pieces", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.pieces: list[str] = []


class Conversation:
    """The message history of one session, with tentative (speculative) turns."""

    __slots__ = ("_open", "_tentative", "max_messages", "messages")

    def __init__(self, max_messages: int = 200) -> None:
        #: Committed history, oldest first.
        self.messages: list[Message] = []
        self.max_messages = max_messages
        self._tentative: dict[int, Message] = {}
        self._open: dict[int, _Reply] = {}  # turn -> the reply's text so far (open replies)

    def user(self, turn: int, text: str, *, tentative: bool = False) -> None:
        """The user's message that reply ``turn`` answers."""
        message = Message(role="user", text=text, turn=turn)
        if tentative:
            self._tentative[turn] = message
        else:
            self._append(message)

    def reply_text(self, turn: int, text: str, source: str) -> None:
        """``source`` emitted reply text of ``turn``; only the reply's source is recorded."""
        reply = self._open.get(turn)
        if reply is None:
            reply = self._open[turn] = _Reply(source)
        elif reply.source != source:
            return
        reply.pieces.append(text)

    def generated(self, turn: int) -> str:
        """The text the source of reply ``turn`` produced so far."""
        reply = self._open.get(turn)
        return "" if reply is None else "".join(reply.pieces)

    def confirm(self, turn: int) -> None:
        """The speculation ``turn`` became the reply: its user message joins the history."""
        message = self._tentative.pop(turn, None)
        if message is not None:
            self._append(message)

    def drop(self, turn: int) -> None:
        """The speculation ``turn`` was dropped: forget it."""
        self._tentative.pop(turn, None)
        self._open.pop(turn, None)

    def ended(self, turn: int, heard_text: str, *, interrupted: bool) -> None:
        """Reply ``turn`` ended (played out, or cut off after ``heard_text``)."""
        reply = self._open.pop(turn, None)
        self._tentative.pop(turn, None)
        text = "" if reply is None else "".join(reply.pieces)
        if interrupted:
            text = cut_to_words(text, heard_text) if text else heard_text
        elif not text:
            text = heard_text  # a reply that had no text source (audio pushed in)
        if text.strip():
            self._append(
                Message(role="assistant", text=text.strip(), turn=turn, interrupted=interrupted)
            )

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

    def snapshot(self, active: int) -> ConversationSnapshot:
        """The committed history, and the reply ``active`` in progress, if any."""
        reply = self._open.get(active)
        tentative = self._tentative.get(active)
        return ConversationSnapshot(
            messages=[msgspec.structs.replace(m) for m in self.messages],
            reply=(
                None
                if reply is None
                else OpenReply(turn=active, source=reply.source, text="".join(reply.pieces))
            ),
            tentative=None if tentative is None else msgspec.structs.replace(tentative),
        )

    def restore(self, snap: ConversationSnapshot) -> None:
        self.messages = [msgspec.structs.replace(m) for m in snap.messages[-self.max_messages :]]
        self._tentative.clear()
        self._open.clear()
        if snap.reply is not None:
            reply = self._open[snap.reply.turn] = _Reply(snap.reply.source)
            if snap.reply.text:
                reply.pieces.append(snap.reply.text)
        if snap.tentative is not None:
            self._tentative[snap.tentative.turn] = msgspec.structs.replace(snap.tentative)
