"""A virtual clock for asyncio: time advances only when every task is waiting.

Like ``trio.testing.MockClock`` with ``autojump_threshold=0``. Under
:class:`VirtualClock`, ``loop.time()``, ``asyncio.sleep``, timeouts and
``call_later`` all run in virtual time, and whenever the loop has nothing to
do but wait for a timer, time jumps straight to that timer. A conversation
that takes a minute of wall-clock time runs in milliseconds, and the same
script produces the same timeline on every run.

Real I/O still works (sockets are polled without blocking before each jump),
but it is not virtual: when a timer is pending, time jumps to it without
waiting for a peer or a thread, so a real round trip can look like it took
exactly as long as the next timer (an ``asyncio.timeout`` around real I/O may
fire at once). With no timer pending the loop waits for the I/O or the thread
in real time -- and forever, if nothing will ever come. Keep virtual-time
tests to in-process fakes, as the kernel's tests do.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualClock", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.BaseSelector):
    """Delegates to a real selector; a wait with a timeout becomes a jump of the clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._inner = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing scheduled: only real I/O (a thread, a socket) can wake us.
            return self._inner.select(None)
        self._clock.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self._virtual_clock = clock
        super().__init__(selector=_JumpingSelector(clock))

    def time(self) -> float:
        return self._virtual_clock.now


class VirtualClock:
    """Virtual time for an asyncio event loop; ``run`` a coroutine under it."""

    def __init__(self, start: float = 1000.0) -> None:
        #: Current virtual time in seconds (starts away from 0 so no timestamp is 0).
        self.now = float(start)

    def advance(self, seconds: float) -> None:
        """Move time forward (the loop does this by itself when it is idle)."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.now += seconds

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new event loop running on this clock."""
        return _VirtualLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to completion on a fresh loop in virtual time (like ``asyncio.run``)."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)


def run_virtual(main: Coroutine[Any, Any, T], start: float = 1000.0) -> T:
    """Run ``main`` under a fresh :class:`VirtualClock`."""
    return VirtualClock(start).run(main)
