"""A queued node's bounded inbox, with an explicit overload policy per kind.

Puts are synchronous (an emitter never awaits a put); what happens when the
inbox is full is decided per kind by :class:`~rspp.kernel.spec.Policy`. The
``block`` policy never drops: it admits the event over capacity and reports
the inbox as *overfull*, and the runtime stops pulling the streams upstream of
it until the consumer has caught up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator

from rspp.events import Event
from rspp.kernel.spec import Policy

__all__ = ["Inbox", "PutResult"]


class PutResult:
    """Outcomes of :meth:`Inbox.put` (plain strings: they end up as counter labels)."""

    QUEUED = "queued"
    OVERFULL = "overfull"  # block policy, admitted over capacity
    DROPPED_NEWEST = "dropped_newest"
    DROPPED_OLDEST = "dropped_oldest"
    REPLACED = "replaced"  # latest policy, an older event of the kind was dropped


class Inbox:
    """FIFO of events with a capacity and per-kind policies."""

    __slots__ = ("_getter", "_items", "_policy", "_space", "capacity")

    def __init__(self, capacity: int, policy: Callable[[Event], Policy]) -> None:
        self.capacity = capacity
        self._items: deque[Event] = deque()
        self._policy = policy
        self._getter: asyncio.Future[None] | None = None
        self._space: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._items)

    @property
    def full(self) -> bool:
        """At or over capacity: streams feeding it are not pulled."""
        return len(self._items) >= self.capacity

    @property
    def overfull(self) -> bool:
        """Over capacity (inline cascades admit ``block`` events beyond it)."""
        return len(self._items) > self.capacity

    def put(self, event: Event) -> str:
        """Queue ``event`` according to its kind's policy; returns a :class:`PutResult`."""
        items = self._items
        policy = self._policy(event)
        result = PutResult.QUEUED
        if policy is Policy.LATEST:
            if self._remove_oldest_of(event.kind):
                result = PutResult.REPLACED
        elif len(items) >= self.capacity:
            if policy is Policy.BLOCK:
                result = PutResult.OVERFULL
            elif policy is Policy.DROP_NEWEST:
                return PutResult.DROPPED_NEWEST
            elif self._remove_oldest_of(event.kind):
                result = PutResult.DROPPED_OLDEST
            else:
                return PutResult.DROPPED_NEWEST
        items.append(event)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        return result

    async def get(self) -> Event:
        """The next event, waiting if there is none."""
        items = self._items
        while not items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        event = items.popleft()
        if self._space is not None and len(items) < self.capacity:
            self._space.set()
        return event

    async def wait_space(self) -> None:
        """Wait until the inbox is below capacity."""
        while len(self._items) >= self.capacity:
            if self._space is None:
                self._space = asyncio.Event()
            self._space.clear()
            await self._space.wait()

    def purge(self, drop: Callable[[Event], bool]) -> list[Event]:
        """Remove and return every queued event for which ``drop`` is true."""
        items = self._items
        dropped = [ev for ev in items if drop(ev)]
        if dropped:
            kept = [ev for ev in items if not drop(ev)]
            items.clear()
            items.extend(kept)
            if self._space is not None and len(items) < self.capacity:
                self._space.set()
        return dropped

    def _remove_oldest_of(self, kind: str) -> bool:
        items = self._items
        for i, queued in enumerate(items):
            if queued.kind == kind:
                del items[i]
                return True
        return False
