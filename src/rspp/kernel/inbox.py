"""A queued node's bounded inbox, with an explicit overload policy per kind.

Puts are synchronous (an emitter never awaits a put); what happens when the
inbox is full is decided per kind by :class:`~rspp.kernel.spec.Policy`,
resolved once per kind (the spec's override, else the kind's default) and
cached, not looked up on every put.

The ``block`` policy never drops an event that arrives through the streams
feeding the inbox: the runtime stops pulling them while it is full. Events
that arrive another way -- an inline cascade, a timer, a ``run()`` body, a
transport's ``push()`` (which refuses with ``Overloaded`` when its direct
target is full) -- are admitted over capacity up to ``limit`` (twice the
capacity by default) and refused beyond it (``overflow``): memory stays
bounded whatever a producer does.

``latest`` keeps only the newest queued event of its kind without scanning
the queue: the replaced event stays in the deque as a tombstone, recognised
(it is not the kind's live event any more) and skipped when it reaches the
front.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from rspp.events import Event
from rspp.kernel.spec import Policy

__all__ = ["Inbox", "PutResult"]

_BLOCK, _LATEST, _DROP_NEWEST = Policy.BLOCK, Policy.LATEST, Policy.DROP_NEWEST


class PutResult:
    """Outcomes of :meth:`Inbox.put` (plain strings: they end up as counter labels)."""

    QUEUED = "queued"
    OVERFULL = "overfull"  # block policy, admitted over capacity
    OVERFLOW = "overflow"  # block policy, refused: the inbox is at its hard limit
    DROPPED_NEWEST = "dropped_newest"
    DROPPED_OLDEST = "dropped_oldest"
    REPLACED = "replaced"  # latest policy, an older event of the kind was dropped


#: Outcomes after which the event is queued.
ACCEPTED = frozenset({PutResult.QUEUED, PutResult.OVERFULL})


class Inbox:
    """FIFO of events with a capacity, a hard limit and per-kind policies."""

    __slots__ = (
        "_dead",
        "_getter",
        "_items",
        "_latest",
        "_policies",
        "_resolve",
        "_space",
        "capacity",
        "limit",
    )

    def __init__(
        self,
        capacity: int,
        resolve: Callable[[str, str], Policy],
        limit: int | None = None,
    ) -> None:
        self.capacity = capacity
        self.limit = max(capacity, limit if limit is not None else 2 * capacity)
        self._items: deque[Event] = deque()
        self._resolve = resolve
        self._policies: dict[str, Policy] = {}
        self._latest: dict[str, Event] = {}  # latest-policy kind -> its live queued event
        self._dead = 0  # tombstones in _items (replaced latest-policy events)
        self._getter: asyncio.Future[None] | None = None
        self._space: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._items) - self._dead

    def __iter__(self) -> Iterator[Event]:
        return (ev for ev in self._items if self._live(ev))

    @property
    def full(self) -> bool:
        """At or over capacity: streams feeding it are not pulled."""
        return len(self._items) - self._dead >= self.capacity

    @property
    def overfull(self) -> bool:
        """Over capacity (events that came around the backpressure are admitted beyond it)."""
        return len(self._items) - self._dead > self.capacity

    def policy(self, kind: str, default: str) -> Policy:
        """The policy for ``kind`` here (resolved once, then cached)."""
        policy = self._policies.get(kind)
        if policy is None:
            policy = self._policies[kind] = self._resolve(kind, default)
        return policy

    def put(self, event: Event) -> str:
        """Queue ``event`` according to its kind's policy; returns a :class:`PutResult`."""
        kind = event.kind
        policy = self._policies.get(kind)
        if policy is None:
            policy = self.policy(kind, event.overload)
        items = self._items
        result = PutResult.QUEUED
        if policy is _LATEST:
            latest = self._latest
            live = latest.get(kind)
            if live is event:
                return PutResult.REPLACED  # already queued: it is the newest of its kind
            if live is not None:
                self._dead += 1
                result = PutResult.REPLACED
            latest[kind] = event
        else:
            size = len(items) - self._dead
            if size >= self.capacity:
                if policy is _BLOCK:
                    if size >= self.limit:
                        return PutResult.OVERFLOW
                    result = PutResult.OVERFULL
                elif policy is _DROP_NEWEST:
                    return PutResult.DROPPED_NEWEST
                elif self._remove_oldest_of(kind):
                    result = PutResult.DROPPED_OLDEST
                else:
                    return PutResult.DROPPED_NEWEST
        items.append(event)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        return result

    def put_front(self, events: Iterable[Event]) -> None:
        """Put ``events`` back at the head, in order, past every limit (restoring a session)."""
        for event in reversed(list(events)):
            if self.policy(event.kind, event.overload) is _LATEST:
                if event.kind in self._latest:
                    continue  # a newer one of the kind is queued already
                self._latest[event.kind] = event
            self._items.appendleft(event)
        getter = self._getter
        if self._items and getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> Event:
        """The next event, waiting if there is none."""
        items = self._items
        while True:
            while not items:
                self._getter = asyncio.get_running_loop().create_future()
                try:
                    await self._getter
                finally:
                    self._getter = None
            event = items.popleft()
            latest = self._latest
            if latest:
                live = latest.get(event.kind)
                if live is not None:
                    if live is not event:
                        self._dead -= 1  # a tombstone: a newer one of its kind is queued
                        continue
                    del latest[event.kind]
            if self._space is not None and len(items) - self._dead < self.capacity:
                self._space.set()
            return event

    async def wait_space(self) -> None:
        """Wait until the inbox is below capacity."""
        while len(self._items) - self._dead >= self.capacity:
            if self._space is None:
                self._space = asyncio.Event()
            self._space.clear()
            await self._space.wait()

    def purge(self, drop: Callable[[Event], bool]) -> list[Event]:
        """Remove and return every queued event for which ``drop`` is true."""
        items = self._items
        if not items:
            return []
        live: Iterable[Event] = [ev for ev in items if self._live(ev)] if self._dead else items
        dropped = [ev for ev in live if drop(ev)]
        if dropped or self._dead:
            gone = {id(ev) for ev in dropped}
            kept = [ev for ev in live if id(ev) not in gone]
            items.clear()
            items.extend(kept)
            self._dead = 0
            self._latest = {k: ev for k, ev in self._latest.items() if id(ev) not in gone}
            if self._space is not None and len(kept) < self.capacity:
                self._space.set()
        return dropped

    def _live(self, event: Event) -> bool:
        live = self._latest.get(event.kind) if self._latest else None
        return live is None or live is event

    def _remove_oldest_of(self, kind: str) -> bool:
        items = self._items
        for i, queued in enumerate(items):
            if queued.kind == kind:
                del items[i]
                return True
        return False
