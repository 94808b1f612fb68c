"""Output across a takeover: numbered where it is made, filtered where it is delivered.

A new owner resumes from the last checkpoint, which is a little older than the
old owner's last output: what the old owner sent after the checkpoint, the new
one sends again (the same reply text, the same audio frames, by the snapshot's
determinism). Positions cannot tell: the new incarnation numbers its output
afresh. So the worker stamps each output event with its ordinal among the
events of the same *turn* and *class* (:class:`OutputStamps`, whose counters
move with the checkpoint), and the gateway forwards an event only if its
ordinal is above the last one it forwarded for that turn and class
(:class:`OutputFilter`). The class is the kind, except that a reply's two
endings (``turn.done``, ``turn.interrupted``) are one class: a reply ends once.
Ordinals are per kind because each kind's order is deterministic, while the
interleaving of kinds depends on timing.

The filter also drops output carrying a token below the highest it has seen
(a stale owner that wrote before it was fenced), and applies the control lane
within each batch it reads: reply audio that a later ``control.clear_buffer``
or ``turn.interrupted`` of the same batch cancels is dropped before it is
forwarded, instead of being sent to the client only to be cleared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from rspp.cluster.records import OutputEntry
from rspp.events import Event

__all__ = ["OutputFilter", "OutputStamps", "stamp_class"]

_ENDINGS = frozenset({"turn.done", "turn.interrupted"})
_CANCELS = frozenset({"control.clear_buffer", "turn.interrupted"})
#: Turns kept behind the newest one (by both sides: an older turn's events do not come back).
KEEP_TURNS = 4


def stamp_class(kind: str) -> str:
    return "turn.end" if kind in _ENDINGS else kind


class OutputStamps:
    """The worker's side: the next ordinal per (turn, class); its counters are checkpointed."""

    __slots__ = ("_counts", "_newest")

    def __init__(self, saved: dict[str, int] | None = None) -> None:
        self._counts: dict[tuple[int, str], int] = {}
        self._newest = 0
        for key, count in (saved or {}).items():
            turn, _, cls = key.partition("|")
            self._counts[(int(turn), cls)] = count
            self._newest = max(self._newest, int(turn))

    def stamp(self, event: Event) -> int:
        turn = event.turn
        key = (turn, stamp_class(event.kind))
        index = self._counts.get(key, 0) + 1
        self._counts[key] = index
        if turn > self._newest:
            self._newest = turn
            self._prune()
        return index

    def _prune(self) -> None:
        floor = self._newest - KEEP_TURNS
        for key in [k for k in self._counts if 0 < k[0] < floor]:
            del self._counts[key]

    def saved(self) -> dict[str, int]:
        return {f"{turn}|{cls}": count for (turn, cls), count in self._counts.items()}


class OutputFilter:
    """The gateway's side: forward each (turn, class, ordinal) once, from the current owner."""

    __slots__ = ("_decode", "_last", "_newest", "duplicates", "stale", "token")

    def __init__(self, decode: msgspec.msgpack.Decoder[Event] | None = None) -> None:
        self.token = 0
        self._last: dict[tuple[int, str], int] = {}
        self._newest = 0
        #: Events dropped: repeated by a new owner, and written by a stale one.
        self.duplicates = 0
        self.stale = 0
        self._decode = decode

    def admit(self, entry: OutputEntry, kind: str) -> bool:
        if entry.token < self.token:
            self.stale += 1
            return False
        self.token = entry.token
        key = (entry.turn, stamp_class(kind))
        if entry.index <= self._last.get(key, 0):
            self.duplicates += 1
            return False
        self._last[key] = entry.index
        if entry.turn > self._newest:
            self._newest = entry.turn
            floor = self._newest - KEEP_TURNS
            for old in [k for k in self._last if 0 < k[0] < floor]:
                del self._last[old]
        return True

    def batch(self, entries: Iterable[tuple[OutputEntry, Event]]) -> Iterator[Event]:
        """The events of one read, admitted, with audio a later cancel of the batch voids."""
        items = list(entries)
        cancelled = 0
        cut = -1
        for i, (_, event) in enumerate(items):
            if event.kind in _CANCELS and event.turn >= cancelled:
                cancelled, cut = event.turn, i
        for i, (entry, event) in enumerate(items):
            if not self.admit(entry, event.kind):
                continue
            if i < cut and event.kind == "audio.out" and event.turn <= cancelled:
                continue  # the control lane: a barge-in is not queued behind its audio
            yield event
