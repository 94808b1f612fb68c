"""Timers owned by a session, on session time, each run as the node that armed it.

A timer remembers its *cause*: the event the node was handling when it armed
the timer (or the timer's own cause, for a timer armed by a timer). When it
fires, the callback runs with that cause, so what it emits inherits the
cause's turn: a text-debouncing node's delayed ``llm.delta`` belongs to the
reply it came from, and an interruption of that reply drops it like any other
output of it. Exceptions are contained and reported as the node's failure.
Closing the session cancels every timer.

Order at one instant: a timer due at or before the session time of an input
fires before that input is handled (the ingress calls :meth:`Timers.fire_due`),
whatever order the event loop would have run them in. A frame of audio due at
the very nanosecond a barge-in arrives is therefore played (or not) the same
way in a session that never moved and in one restored from a snapshot and fed
the same input at the same times: the loop's order of equal deadlines depends
on its history, the session's does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rspp.events import Event

if TYPE_CHECKING:
    from rspp.kernel.runner import NodeRunner
    from rspp.kernel.session import Session

__all__ = ["Timer", "Timers"]


class Timer:
    """A pending timer; ``cancel()`` it if it is no longer needed.

    Once it has fired or been cancelled it drops its callback and its loop handle
    (which refers back to it): no reference cycle is left for the collector, at
    one timer per audio frame per call.
    """

    __slots__ = (
        "_args",
        "_callback",
        "_cause",
        "_handle",
        "_owner",
        "_runner",
        "number",
        "when_ns",
    )

    def __init__(
        self,
        owner: set[Timer],
        when_ns: int,
        number: int,
        runner: NodeRunner,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        cause: Event | None,
    ) -> None:
        self._owner = owner
        self._handle: asyncio.TimerHandle | None = None
        self._runner: NodeRunner | None = runner
        self._callback: Callable[..., object] | None = callback
        self._args = args
        self._cause = cause
        #: When it fires (session time, ns).
        self.when_ns = when_ns
        #: Arming order (ties of ``when_ns`` fire in it).
        self.number = number

    def cancel(self) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
        self._release()

    @property
    def pending(self) -> bool:
        return self in self._owner

    def _fire(self) -> None:
        runner, callback, args, cause = self._runner, self._callback, self._args, self._cause
        self._release()
        if runner is not None and callback is not None:
            runner.call_as(cause, callback, args)

    def _release(self) -> None:
        self._owner.discard(self)
        self._handle = self._runner = self._callback = self._cause = None
        self._args = ()


class Timers:
    """The set of a session's pending timers."""

    __slots__ = ("_armed", "_pending", "_session", "earliest_ns")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pending: set[Timer] = set()
        self._armed = 0
        #: No pending timer is due before this (a lower bound: exact after ``fire_due``),
        #: so the input's hot path compares one number, not the set.
        self.earliest_ns = _NEVER

    def call_at(
        self,
        runner: NodeRunner,
        when_ns: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        cause: Event | None,
    ) -> Timer | None:
        """Run ``callback(*args)`` as ``runner`` at session time ``when_ns`` (None: closed)."""
        session = self._session
        if session.state not in ("new", "running"):  # "new": a node restoring its deadlines
            return None
        loop = asyncio.get_running_loop()
        self._armed += 1
        timer = Timer(self._pending, when_ns, self._armed, runner, callback, args, cause)
        timer._handle = loop.call_at(session.clock.loop_time(when_ns), timer._fire)
        self._pending.add(timer)
        if when_ns < self.earliest_ns:
            self.earliest_ns = when_ns
        return timer

    def fire_due(self, now_ns: int) -> None:
        """Fire now, in order, the timers due at or before ``now_ns`` that the loop has not run."""
        while True:
            due = [t for t in self._pending if t.when_ns <= now_ns]
            if not due:
                self.earliest_ns = min((t.when_ns for t in self._pending), default=_NEVER)
                return
            # One at a time: a callback may cancel or arm timers (also due ones).
            timer = min(due, key=_order)
            if timer._handle is not None:
                timer._handle.cancel()
            timer._fire()

    def cancel_all(self) -> None:
        for timer in list(self._pending):
            timer.cancel()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)


_NEVER = 1 << 62


def _order(timer: Timer) -> tuple[int, int]:
    return timer.when_ns, timer.number
