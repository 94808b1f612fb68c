"""What of each reply actually reached the client.

The kernel feeds the ledger every ``audio.out`` frame at the moment it is
handed to a sink. When a reply is interrupted, the ledger says how much audio
of it was delivered and which text that audio voiced, so the conversation
context can be cut to what the user heard (not what was generated).
Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Delivered", "DeliveryLedger"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """The part of one turn's reply that reached the client."""

    turn: int
    delivered_ns: int
    heard_text: str

    @property
    def delivered_ms(self) -> float:
        return self.delivered_ns / 1e6


class _Entry:
    __slots__ = ("ns", "texts")

    def __init__(self) -> None:
        self.ns = 0
        self.texts: list[str] = []


class DeliveryLedger:
    """Per-turn delivered duration and text. Keeps only the last few turns."""

    __slots__ = ("_keep", "_turns")

    def __init__(self, keep: int = 8) -> None:
        self._turns: dict[int, _Entry] = {}
        self._keep = keep

    def delivered(self, turn: int, duration_ns: int, text: str) -> None:
        """One frame of ``turn`` was handed to the client."""
        entry = self._turns.get(turn)
        if entry is None:
            entry = self._turns[turn] = _Entry()
            if len(self._turns) > self._keep:
                del self._turns[min(self._turns)]
        entry.ns += duration_ns
        if text:
            entry.texts.append(text)

    def record(self, turn: int) -> Delivered:
        """What of ``turn`` was delivered so far."""
        entry = self._turns.get(turn)
        if entry is None:
            return Delivered(turn, 0, "")
        return Delivered(turn, entry.ns, "".join(entry.texts))
