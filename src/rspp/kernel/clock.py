"""Session time: the clock every event, deadline and latency mark of a session uses.

Session time is the event loop's monotonic clock (or a virtual one, under
``rspp.testing.VirtualClock``) plus an offset. A fresh session has offset 0.
A session restored from a snapshot in another process -- whose loop clock has
another origin -- gets the offset that makes its session time continue from
the snapshot's, so origin times, deadlines and latency marks carried in the
snapshot keep their meaning. By default the time that passed between the
snapshot and the restore (measured on the wall clock, which, unlike the
monotonic one, means the same on both machines) is added: a deadline that fell
due while the session was moving fires at once.
"""

from __future__ import annotations

import asyncio

__all__ = ["SessionClock"]


class SessionClock:
    """Nanoseconds of session time, from the running loop's clock plus an offset."""

    __slots__ = ("_loop", "offset_ns")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self.offset_ns = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now_ns(self) -> int:
        """The session time now."""
        loop = self._loop or asyncio.get_running_loop()
        return round(loop.time() * 1e9) + self.offset_ns

    def loop_time(self, session_ns: int) -> float:
        """The loop time (seconds) at which session time reaches ``session_ns``."""
        return (session_ns - self.offset_ns) / 1e9

    def continue_at(self, session_ns: int) -> None:
        """Make the session time now be ``session_ns`` (restoring a moved session)."""
        loop = self._loop or asyncio.get_running_loop()
        self.offset_ns = session_ns - round(loop.time() * 1e9)
