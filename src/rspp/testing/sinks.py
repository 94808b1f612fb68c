"""A sink that records what a session sends to the client, with the time it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rspp.events import AudioOut, Event

__all__ = ["RecordingSink"]


class RecordingSink:
    """Records every event sent to it as ``(time_ns, event)``; lets a test wait for one."""

    def __init__(self) -> None:
        self.records: list[tuple[int, Event]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._replies_ended = 0
        #: Turns of which at least one audio frame arrived.
        self.audio_turns: set[int] = set()
        #: When each reply's first audio frame arrived, in order (ns).
        self.reply_starts: list[int] = []

    def send(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        now = round(loop.time() * 1e9)
        self.records.append((now, event))
        if isinstance(event, AudioOut) and event.turn not in self.audio_turns:
            self.audio_turns.add(event.turn)
            self.reply_starts.append(now)
        elif event.kind in ("turn.done", "turn.interrupted"):
            self._replies_ended += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def events(self) -> list[Event]:
        return [ev for _, ev in self.records]

    def of_kind(self, kind: str) -> list[Event]:
        """Every recorded event of ``kind``."""
        return [ev for _, ev in self.records if ev.kind == kind]

    def audio(self, turn: int | None = None) -> list[AudioOut]:
        """Audio frames received (optionally of one turn)."""
        return [
            ev
            for _, ev in self.records
            if isinstance(ev, AudioOut) and (turn is None or ev.turn == turn)
        ]

    def audio_ms(self, turn: int | None = None) -> float:
        """Milliseconds of audio received."""
        return sum(f.duration_ns for f in self.audio(turn)) / 1e6

    def pcm(self) -> bytes:
        """All audio received, concatenated (what the user heard, without the gaps)."""
        return b"".join(f.pcm for f in self.audio())

    @property
    def replies_ended(self) -> int:
        """Replies that were played out or interrupted."""
        return self._replies_ended

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` is true (checked after each event received).

        Bound it with ``asyncio.timeout`` where the event might never come.
        """
        while not predicate():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
