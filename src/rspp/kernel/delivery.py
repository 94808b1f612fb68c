"""What of each reply reached the client, and what of it the client has played.

The kernel feeds the ledger every ``audio.out`` frame at the moment it is
handed to a sink, and every ``playback.position`` report a client sends.
*Heard means played*: when a client reports playback for a reply, what the
user heard of it is the audio up to the reported position; without reports,
it is the audio handed to the sink (a transport with nothing between it and
the ear, or a client that does not report). When a reply ends, the ledger
says how much audio of it was heard and which text that audio voiced (a
frame's ``text`` is the words whose audio ends in it), so the conversation
can be cut to what the user heard, not what was generated.

Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import msgspec

__all__ = ["Delivered", "DeliveryLedger", "LedgerEntry"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """The part of one turn's reply that the user heard."""

    turn: int
    #: Audio heard: played (if the client reports playback) or handed to the client.
    delivered_ns: int
    heard_text: str
    #: Audio handed to the client (>= delivered_ns).
    sent_ns: int = 0
    #: Whether ``delivered_ns`` comes from the client's playback reports.
    played: bool = False

    @property
    def delivered_ms(self) -> float:
        return self.delivered_ns / 1e6


class LedgerEntry(msgspec.Struct, kw_only=True):
    """One reply's record (also its form in a snapshot)."""

    turn: int
    #: Audio handed to the client so far.
    sent_ns: int = 0
    #: End of each text-carrying frame in the reply's audio (ns from its start), ascending.
    ends: list[int] = msgspec.field(default_factory=list)
    #: The text of those frames.
    texts: list[str] = msgspec.field(default_factory=list)
    #: The client's latest playback report (ns), or -1 if it sent none.
    played_ns: int = -1


class DeliveryLedger:
    """Per-turn sent audio, the text it voices, and playback reports. Keeps the last few."""

    __slots__ = ("_keep", "_turns")

    def __init__(self, keep: int = 8) -> None:
        self._turns: dict[int, LedgerEntry] = {}
        self._keep = keep

    def _entry(self, turn: int) -> LedgerEntry:
        entry = self._turns.get(turn)
        if entry is None:
            entry = self._turns[turn] = LedgerEntry(turn=turn)
            if len(self._turns) > self._keep:
                del self._turns[min(self._turns)]
        return entry

    def delivered(self, turn: int, duration_ns: int, text: str) -> None:
        """One frame of ``turn`` was handed to the client."""
        entry = self._turns.get(turn)
        if entry is None:
            entry = self._entry(turn)
        entry.sent_ns += duration_ns
        if text:
            entry.ends.append(entry.sent_ns)
            entry.texts.append(text)

    def played(self, turn: int, played_ms: float) -> None:
        """The client reports having played ``played_ms`` of ``turn``'s audio (a total)."""
        entry = self._turns.get(turn)
        if entry is None:
            return  # a report for a reply we know nothing of (long gone): ignore
        played = min(round(played_ms * 1e6), entry.sent_ns)
        if played > entry.played_ns:
            entry.played_ns = played

    def record(self, turn: int) -> Delivered:
        """What of ``turn`` the user heard so far."""
        entry = self._turns.get(turn)
        if entry is None:
            return Delivered(turn, 0, "")
        if entry.played_ns < 0:
            return Delivered(turn, entry.sent_ns, "".join(entry.texts), entry.sent_ns)
        heard = bisect_right(entry.ends, entry.played_ns)
        return Delivered(
            turn, entry.played_ns, "".join(entry.texts[:heard]), entry.sent_ns, played=True
        )

    # -- moving a session ---------------------------------------------------------------

    def snapshot(self, turn: int) -> LedgerEntry | None:
        """The record of ``turn`` (the reply in progress), to move with the session."""
        entry = self._turns.get(turn)
        return None if entry is None else _copy(entry)

    def restore(self, entry: LedgerEntry | None) -> None:
        self._turns.clear()
        if entry is not None:
            self._turns[entry.turn] = _copy(entry)


def _copy(entry: LedgerEntry) -> LedgerEntry:
    return msgspec.structs.replace(entry, ends=list(entry.ends), texts=list(entry.texts))
