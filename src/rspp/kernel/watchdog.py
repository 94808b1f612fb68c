"""The reply watchdog: a reply that makes no progress for too long is ended by the kernel.

A committed reply is RESPONDING until the output reports it played
(``turn.done``) or something ends it. If a provider hangs without an error, a
node drops the end marker, or a stage stops without a word, nothing would end
it, and the turn manager would treat the user's next words as talk over a
bot that says nothing. So while a reply is RESPONDING and its output is not
paused, the watchdog checks that reply output keeps moving (the emission path
counts every event of the active reply); after ``reply.no_progress_ms`` (the
pipeline spec) without any, the kernel ends the reply: ``turn.interrupted``
with reason ``stalled``, an ``error`` event, a counter. The next user turn
then works normally. A held speculation is not watched (it waits for its
confirmation by design), nor a reply whose output is paused (the turn
manager is deciding whether the user interrupts).

The check runs every quarter of the deadline on the session's clock, so a
stall is caught between 1 and 1.25 deadlines after the last progress; it
costs nothing on the hot path but an integer increment.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rspp.events import Error

if TYPE_CHECKING:
    from rspp.kernel.session import Session

__all__ = ["ReplyWatchdog"]


class ReplyWatchdog:
    """Ends a RESPONDING reply whose output stops moving (see the module docstring)."""

    __slots__ = ("_handle", "_last", "_paused", "_since", "_turn", "deadline_ns", "session")

    def __init__(self, session: Session, deadline_ms: float) -> None:
        self.session = session
        self.deadline_ns = int(deadline_ms * 1e6)
        self._turn = 0
        self._last = -1
        self._since = 0
        self._paused = False
        self._handle: asyncio.TimerHandle | None = None

    def follow(self) -> None:
        """The turn state changed: watch the reply now RESPONDING, if any."""
        turn = self.session.turns.responding
        if turn == self._turn:
            return
        self._turn = turn
        self._paused = False
        if not turn:
            return  # the pending check finds nothing to watch and stops
        self._reset()
        if self._handle is None:
            self._arm()  # one check every quarter deadline while replies go on, not one per reply

    def pause(self) -> None:
        """The output was paused (an undecided barge-in): not a stall."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._reset()
        if self._handle is None:
            self._arm()

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self) -> None:
        self._turn = 0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _reset(self) -> None:
        session = self.session
        self._last = session.emission.progress
        self._since = session.clock.now_ns()

    def _arm(self) -> None:
        session = self.session
        if not self.deadline_ns or not self._turn or not session.running:
            self._handle = None
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.deadline_ns / 4e9, self._check)

    def _check(self) -> None:
        self._handle = None
        session = self.session
        turn = self._turn
        if turn == 0 or session.turns.responding != turn:
            return
        now = session.clock.now_ns()
        progress = session.emission.progress
        if progress != self._last or self._paused:
            self._last, self._since = progress, now
        elif now - self._since >= self.deadline_ns:
            waited_ms = (now - self._since) / 1e6
            message = f"reply {turn} made no progress for {waited_ms:.0f} ms: the kernel ended it"
            session.log.warning("session %s: %s", session.id, message)
            session.stats.errors["kernel:stalled"] += 1
            session.publish(Error(turn=turn, source="kernel", code="ReplyStalled", message=message))
            session.fail_reply(turn, "stalled")
            return
        self._arm()
