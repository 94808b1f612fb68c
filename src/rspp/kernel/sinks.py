"""Sinks, and the one path by which a session's output reaches them.

A :class:`Sink` is where output goes: a transport to the client, a recorder.
Everything a session hands to its sinks goes through :class:`Outbound`, which
is where what a sink may rely on is made true:

* **Positions.** Each event gets, at the moment it is handed over, the next
  output position (``pos``) and the session run's incarnation (``inc``). A sink
  receives events in strictly increasing ``pos``; ``(inc, pos)`` is unique and
  increasing across incarnations (a restored session continues the numbering
  under a higher incarnation), so a receiver that keeps the highest pair it has
  seen can drop duplicates and keep order across a move. (``seq`` is emission
  order, which is not delivery order: held output of a confirmed speculation is
  delivered after events emitted later.) One control event sent to every sink
  is one event with one position.
* **No re-entrant delivery.** A sink that reacts to an event by pushing into
  the session (a transport forwarding a client's "stop") never receives an
  event while it is still inside ``send`` for another: what the push causes is
  queued and delivered, in order, as soon as the outer ``send`` returns --
  still within the same synchronous call.
* **The fence is checked at the last moment.** Reply output whose turn became
  fenced while it waited (in that queue, or held back at the speculation gate)
  is dropped then, not delivered: an interrupt that a sink pushes while a
  speculation's held output is being released stops the rest of it.
* **The speculation gate.** Reply output of a held speculation waits here
  until ``turn.confirm`` releases it, in emission order.

Every ``audio.out`` handed over is recorded in the delivery ledger (what the
user heard, unless the client reports playback). A sink that raises is
counted and logged; the kernel's work goes on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import msgspec

from rspp.events import AudioOut, Event
from rspp.kernel.turns import State

if TYPE_CHECKING:
    from rspp.kernel.delivery import DeliveryLedger
    from rspp.kernel.stats import SessionStats
    from rspp.kernel.turns import TurnMachine

__all__ = ["Outbound", "Sink"]

log = logging.getLogger("rspp.session")

_SPECULATING = State.SPECULATING


class Sink(Protocol):
    """Where a session's output goes: a transport to the client, or a recorder.

    ``send`` must not block: a transport buffers and writes asynchronously. It
    receives the events emitted by the nodes bound to it and every public
    control-lane event (``control.clear_buffer`` means: drop what you have
    buffered, now). See :mod:`rspp.kernel.sinks` for the order it may rely on.
    """

    def send(self, event: Event) -> None: ...


class Outbound:
    """The session's side of its sinks: positions, ordering, the gate, the ledger."""

    __slots__ = (
        "_busy",
        "_gate",
        "_names",
        "_queue",
        "_session_id",
        "incarnation",
        "ledger",
        "pos",
        "sinks",
        "stats",
        "turns",
    )

    def __init__(
        self,
        session_id: str,
        sinks: Mapping[str, Sink],
        turns: TurnMachine,
        ledger: DeliveryLedger,
        stats: SessionStats,
    ) -> None:
        self._session_id = session_id
        self.sinks = dict(sinks)
        self._names = {id(s): n for n, s in self.sinks.items()}
        self.turns = turns
        self.ledger = ledger
        self.stats = stats
        #: The session run's incarnation, stamped on everything sent.
        self.incarnation = 1
        #: The last output position given.
        self.pos = 0
        self._busy = False
        self._queue: deque[tuple[Sink, Event, bool]] = deque()
        self._gate: list[tuple[Sink, Event]] = []

    # -- the hot path ----------------------------------------------------------------------

    def send(self, sink: Sink, event: Event) -> None:
        """Hand ``event`` to ``sink`` (or hold it back, or queue it behind a send in progress)."""
        turns = self.turns
        if event.__class__.fenced and turns.state is _SPECULATING and event.turn == turns.active:
            self._gate.append((sink, event))
            return
        if self._busy:
            self._queue.append((sink, event, False))
            return
        self._busy = True
        try:
            self._deliver(sink, event, False)
            if self._queue:
                self._drain()
        finally:
            self._busy = False

    def broadcast(self, event: Event) -> None:
        """Hand one (control) event to every sink: one event, one position."""
        shared = False
        if self._busy:  # inside a send: after what is queued, every sink in turn
            for sink in self.sinks.values():
                self._queue.append((sink, event, shared))
                shared = True
            return
        self._busy = True
        try:
            for sink in self.sinks.values():
                self._deliver(sink, event, shared)  # what its send causes waits in the queue
                shared = True
            if self._queue:
                self._drain()
        finally:
            self._busy = False

    def _flush(self) -> None:
        """Deliver what is queued, unless a delivery is in progress (it will)."""
        if not self._busy:
            self._busy = True
            try:
                self._drain()
            finally:
                self._busy = False

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            sink, event, shared = queue.popleft()
            self._deliver(sink, event, shared)

    def _deliver(self, sink: Sink, event: Event, shared: bool) -> None:
        cls = event.__class__
        if cls.fenced and event.turn <= self.turns.fence:
            self.stats.drops[("sinks", event.kind, "fenced")] += 1
            return
        if not shared:
            if event.pos:  # this object went to a sink before: a new delivery, a new position
                event = msgspec.structs.replace(event)
            self.pos += 1
            event.pos = self.pos
            event.inc = self.incarnation
        if cls is AudioOut:
            self.ledger.delivered(event.turn, event.duration_ns, event.text)  # type: ignore[attr-defined]
        try:
            sink.send(event)
        except Exception as exc:
            name = self._names.get(id(sink), "?")
            self.stats.errors[f"sink:{name}"] += 1
            log.error(
                "session %s: sink %r failed on %s: %r", self._session_id, name, event.kind, exc
            )

    # -- the speculation gate ------------------------------------------------------------

    def release(self) -> None:
        """The held speculation was confirmed: what it held goes out now, in order."""
        gate, self._gate = self._gate, []
        if gate:
            self._queue.extend((sink, event, False) for sink, event in gate)
            self._flush()

    def drop_fenced(self) -> int:
        """Forget held output of fenced turns; returns how many events were dropped."""
        fence = self.turns.fence
        before = len(self._gate)
        if before:
            self._gate = [(s, ev) for s, ev in self._gate if ev.turn > fence]
        return before - len(self._gate)

    @property
    def held(self) -> int:
        """Events waiting at the gate."""
        return len(self._gate)
