"""The emission path: the one way every event moves through a session.

Whatever emits -- a node's handler, a stream, a timer, a ``run()`` body, a
thread handing results back, a transport's ``push()`` -- the event comes
through :meth:`EmissionPath.emit`, and that is where the kernel's guarantees
are enforced:

* **Stamping.** A fresh event (``seq == 0``) gets the session id and the next
  ``seq``; its ``turn`` and ``origin_ns`` are copied from its cause unless set.
  Without a cause, facts (user input, diagnostics, control) take the current
  epoch and the current time.
* **Control before data.** A control-lane event is acted on at once, inside
  this call: fed to the turn machine, its decision executed (fence, clear,
  cancel, record), and delivered to the nodes that listen for it and to the
  sinks -- before the emitter gets control back, never queued behind data.
* **Reply output belongs to the reply in progress.** A fenced-kind event
  (the bot's output) moves only if its turn is the active reply. Output of a
  reply that is over is dropped (``fenced``); output with no reply to belong
  to -- no cause and no turn, or a number no reply has yet -- is dropped
  (``no_reply``) and reported once per node and kind with an ``error`` event,
  because letting it through is how a node emitting from a timer or a thread
  leaked audio past an interruption. A reply root (``turn.commit``,
  ``turn.speculate``) is numbered here, and starts its reply.
* **Routing.** Sink first, then observers, then the consuming nodes, so what
  the consumers emit in turn comes after it everywhere; if delivering to the
  sink fenced the turn (a sink that pushed an interrupt), the consumers do not
  get it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rspp.events import (
    AsrFinal,
    Error,
    Event,
    LlmDelta,
    TtsAudio,
    TurnCommit,
    TurnSpeculate,
    UnknownEvent,
    VadSpeechEnd,
)
from rspp.kernel.errors import TurnProtocolError
from rspp.kernel.turns import Decision, State

if TYPE_CHECKING:
    from rspp.kernel.runner import NodeRunner
    from rspp.kernel.session import Session

__all__ = ["EmissionPath", "Observer"]

log = logging.getLogger("rspp.session")

Observer = Callable[[Event], object]

_ROOTS = (TurnCommit, TurnSpeculate)
_SPECULATING = State.SPECULATING


class EmissionPath:
    """Stamps, checks and routes every event of one session (see the module docstring)."""

    __slots__ = (
        "_reported",
        "clock",
        "listeners",
        "observers",
        "outbound",
        "progress",
        "seq",
        "session",
        "sid",
        "turns",
    )

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sid = session.id
        self.turns = session.turns
        self.clock = session.clock
        self.outbound = session.outbound
        self.observers: list[Observer] = []
        self.listeners: dict[str, tuple[NodeRunner, ...]] = {}
        #: The last ``seq`` given.
        self.seq = 0
        #: Reply output that moved (the watchdog's measure of a reply's progress).
        self.progress = 0
        self._reported: set[tuple[str, str]] = set()

    # -- the hot path ----------------------------------------------------------------------

    def emit(self, source: NodeRunner | None, event: Event, cause: Event | None) -> None:
        """Stamp, check and route one event. ``source`` None means the kernel itself.

        The kernel acts on an event (numbers a reply, executes a control event,
        takes latency marks) once, when it is first emitted; a node that forwards
        an event it received (same object, ``seq`` already set) only routes it.
        """
        cls = event.__class__
        fresh = event.seq == 0
        if fresh:
            event.session = self.sid
            if cause is not None:
                if event.turn == 0:
                    event.turn = cause.turn
                if event.origin_ns == 0:
                    event.origin_ns = cause.origin_ns
            else:
                if event.turn == 0 and (cls.lane or not cls.fenced or cls is UnknownEvent):
                    event.turn = self.turns.epoch
                if event.origin_ns == 0:
                    event.origin_ns = self.clock.now_ns()
            self.seq += 1
            event.seq = self.seq
        if cls.lane:
            if fresh:
                self._control(source, event)
            return
        if cls.fenced:
            turns = self.turns
            if fresh and cls in _ROOTS:
                if not self._root(source, event):
                    return
            elif event.turn != turns.active and (
                cls is not UnknownEvent or event.turn <= turns.fence
            ):
                self._stale(source, event)
                return
            self.progress += 1
        if fresh and cls.milestone:
            self._mark(source, event)
        if source is None:
            if self.observers:
                self.notify_observers(event)
            return
        sink = source.sink_target
        if sink is not None:
            self.outbound.send(sink, event)
            if cls.fenced and event.turn <= self.turns.fence:
                return  # the sink reacted by fencing this very turn
        if self.observers:
            self.notify_observers(event)
        targets = source.routes.get(event.kind)
        if targets is None:
            targets = source.route(event.kind)
        for target in targets:
            target.deliver(event)

    # -- what the kernel does on first sight -------------------------------------------

    def _root(self, source: NodeRunner | None, event: Event) -> bool:
        """A reply starts (commit or speculation): number it, run the turn machine."""
        session = self.session
        speculative = event.__class__ is TurnSpeculate
        try:
            decision = self.turns.speculate() if speculative else self.turns.commit()
        except TurnProtocolError as exc:
            session.illegal(source, event, exc)
            return False
        event.turn = decision.committed  # the kernel numbers replies, whatever the cause was
        session.executor.execute(decision)
        session.conversation.user(event.turn, event.text, tentative=speculative)  # type: ignore[attr-defined]
        if speculative:
            session.speculation.attempts += 1
        session.latency.root(
            event.turn, self.clock.now_ns(), time.perf_counter_ns(), speculative=speculative
        )
        return True

    def _mark(self, source: NodeRunner | None, event: Event) -> None:
        """Bookkeeping for the first emission of a milestone event."""
        session = self.session
        cls = event.__class__
        now = self.clock.now_ns()
        if cls is VadSpeechEnd or cls is AsrFinal:
            session.latency.user_mark(event.kind, now, event.origin_ns)
            return
        speculating = self.turns.state is _SPECULATING
        if cls is LlmDelta:
            name = source.name if source is not None else "kernel"
            session.conversation.reply_text(event.turn, event.text, name)  # type: ignore[attr-defined]
            if speculating:
                session.executor.held_output(event.turn, deltas=1)
        elif cls is TtsAudio and speculating:
            session.executor.held_output(event.turn, audio_ns=event.duration_ns)  # type: ignore[attr-defined]
        session.latency.emitted(event.kind, event.turn, now, time.perf_counter_ns())

    def _stale(self, source: NodeRunner | None, event: Event) -> None:
        """Reply output that belongs to no reply in progress: drop it, count it, say so once."""
        name = source.name if source is not None else "kernel"
        if event.turn != 0 and event.turn <= self.turns.fence:
            self.session.count_drop(name, event.kind, "fenced")
            return
        self.session.count_drop(name, event.kind, "no_reply")
        key = (name, event.kind)
        if key in self._reported:
            return
        self._reported.add(key)
        why = (
            "it has no cause and no turn (emitted from a run() body, or a thread or callback "
            "that did not inherit the handler's context): pass the event it answers as "
            "`cause`, or set `turn`"
            if event.turn == 0
            else f"turn {event.turn} is not a reply that has started (active: "
            f"{self.turns.active or 'none'})"
        )
        message = (
            f"dropped {event.kind!r}: reply output must belong to the reply in progress; {why}"
        )
        log.warning("session %s: node %r %s", self.sid, name, message)
        self.session.publish(Error(source=name, code="NoReply", message=message))

    # -- the control lane ----------------------------------------------------------------

    def _control(self, source: NodeRunner | None, event: Event) -> None:
        session = self.session
        turns = self.turns
        kind = event.kind
        decision: Decision | None = None
        try:
            if kind == "control.interrupt":
                decision = turns.interrupt()
            elif kind == "control.cancel":
                decision = turns.cancel(event.turn)
            elif kind == "turn.confirm":
                decision = turns.confirm(event.turn)
            elif kind == "turn.done":
                decision = turns.played(event.turn)
            elif kind == "control.clear_buffer":
                decision = turns.clear(event.turn)
            elif kind == "playback.position":
                session.ledger.played(event.turn, event.played_ms)  # type: ignore[attr-defined]
            elif kind == "control.pause":
                session.watchdog.pause()
            elif kind == "control.resume":
                session.watchdog.resume()
        except TurnProtocolError as exc:
            session.illegal(source, event, exc)
            return
        # The request itself is announced first, then the decision's effects follow
        # within the same synchronous call.
        self.notify(event)
        if decision is not None and decision.actions:
            session.executor.execute(decision)

    def notify(self, event: Event, *, public: bool = True) -> None:
        """Deliver a control event to the nodes that listen for its kind, the sinks, observers.

        Sinks (the client) are told only about public kinds and public outcomes:
        nothing about a speculation, which the user never hears of.
        """
        for runner in self.listeners.get(event.kind, ()):
            runner.control(event)
        if public and event.__class__.public:
            self.outbound.broadcast(event)
        if self.observers:
            self.notify_observers(event)

    def stamp(self, event: Event) -> None:
        """Stamp an event the kernel makes itself: the current turn, the current time."""
        event.session = self.sid
        if event.turn == 0:
            event.turn = self.turns.epoch
        if event.origin_ns == 0:
            event.origin_ns = self.clock.now_ns()
        self.seq += 1
        event.seq = self.seq

    def notify_observers(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                log.exception("session %s: observer %r failed", self.sid, observer)
