"""Timers owned by a session, on session time, each run as the node that armed it.

A timer remembers its *cause*: the event the node was handling when it armed
the timer (or the timer's own cause, for a timer armed by a timer). When it
fires, the callback runs with that cause, so what it emits inherits the
cause's turn: a text-debouncing node's delayed ``llm.delta`` belongs to the
reply it came from, and an interruption of that reply drops it like any other
output of it. Exceptions are contained and reported as the node's failure.
Closing the session cancels every timer.
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
    """A pending timer; ``cancel()`` it if it is no longer needed."""

    __slots__ = ("_handle", "_owner", "when_ns")

    def __init__(self, owner: set[Timer], when_ns: int) -> None:
        self._owner = owner
        self._handle: asyncio.TimerHandle | None = None
        #: When it fires (session time, ns).
        self.when_ns = when_ns

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._owner.discard(self)

    @property
    def pending(self) -> bool:
        return self in self._owner


class Timers:
    """The set of a session's pending timers."""

    __slots__ = ("_pending", "_session")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pending: set[Timer] = set()

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
        timer = Timer(self._pending, when_ns)

        def fire() -> None:
            self._pending.discard(timer)
            runner.call_as(cause, callback, args)

        timer._handle = loop.call_at(session.clock.loop_time(when_ns), fire)
        self._pending.add(timer)
        return timer

    def cancel_all(self) -> None:
        for timer in list(self._pending):
            timer.cancel()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)
