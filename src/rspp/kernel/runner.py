"""The shell around one node instance: how it is driven, fed and cancelled.

An *inline* runner calls the node's ``on_event`` directly from the emitter (no
queue, no task switch). A *queued* runner owns an :class:`~rspp.kernel.inbox.Inbox`
and a worker task that handles one event at a time; for ``stream`` nodes it
pulls the async generator, emitting each item, and stops pulling the moment
the turn it works for is fenced. The runner is also the node's
:class:`~rspp.kernel.node.NodeContext`.

The cause of an emission
------------------------
What a node emits takes its turn and origin time from its *cause*: the event
passed to ``emit``, or by default the event the node is handling. "Handling"
is tracked per execution context, so it is right on every path:

* inside ``on_event``/``on_control``/a timer callback: that event (a timer's
  cause is the event being handled when it was armed);
* inside a queued node's handler (``stream`` or queued ``on_event``), and in
  anything that inherits the handler's ``contextvars`` context -- a callback
  it schedules with ``loop.call_soon``, a thread started with
  ``asyncio.to_thread`` that hands results back: the event being handled;
* in a ``run()`` body, in a callback from a thread that did not inherit the
  context, or in what an *inline* handler left behind (it runs in its
  emitter's context, and tracking it there would cost every hop a context
  switch): nothing. Reply output emitted there must name its turn (``turn=``)
  or its cause, or the kernel drops it (``no_reply``, reported): it cannot
  tell which reply it belongs to, and guessing would let output of an
  interrupted reply leak into the next one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rspp.events import Event, kind_of
from rspp.kernel.inbox import ACCEPTED, Inbox
from rspp.kernel.node import Node
from rspp.kernel.spec import INPUT, Policy

if TYPE_CHECKING:
    from rspp.kernel.conversation import Conversation
    from rspp.kernel.graph import NodePlan
    from rspp.kernel.session import Session
    from rspp.kernel.sinks import Sink
    from rspp.kernel.timers import Timer

__all__ = ["CAUSE", "NodeRunner"]

#: The event being handled in this execution context (see the module docstring).
CAUSE: contextvars.ContextVar[Event | None] = contextvars.ContextVar("rspp_cause", default=None)

#: Kinds with which a node ends its part of a reply (a failure after one does not fail it).
_PART_DONE = frozenset({"llm.done", "tts.done"})


class NodeRunner:
    """Drives one node for one session (or, with ``plan=None``, stands for the ingress)."""

    __slots__ = (
        "_current",
        "_downstream_queued",
        "_fence_cancel",
        "_log",
        "_part_done",
        "in_flight",
        "inbox",
        "name",
        "node",
        "plan",
        "routes",
        "session",
        "sink_target",
        "task",
    )

    def __init__(self, session: Session, plan: NodePlan | None) -> None:
        self.session = session
        self.plan = plan
        self.name = plan.name if plan is not None else INPUT
        self._log = logging.getLogger(f"rspp.node.{self.name}")
        self.node: Node[Any] | None = None
        self.routes: dict[str, tuple[NodeRunner, ...]] = {}
        self.sink_target: Sink | None = None
        self.inbox: Inbox | None = None
        #: The event a queued node is handling (what a snapshot calls in flight).
        self.in_flight: Event | None = None
        self.task: asyncio.Task[None] | None = None
        self._current: Event | None = None  # the event of a synchronous handler in progress
        self._fence_cancel = False
        self._part_done = False
        self._downstream_queued: tuple[NodeRunner, ...] = ()
        if plan is not None and plan.queued:
            self.inbox = Inbox(plan.capacity, self._resolve)

    def _resolve(self, kind: str, default: str) -> Policy:
        assert self.plan is not None
        return self.plan.policy(kind, default)

    def bind(self, runners: dict[str, NodeRunner]) -> None:
        """Resolve static routes and the queued nodes downstream (after all runners exist)."""
        pipeline = self.session.pipeline
        for (source, kind), names in pipeline._static_routes.items():
            if source == self.name:
                self.routes[kind] = tuple(runners[n] for n in names)
        if self.plan is not None:
            self._downstream_queued = tuple(
                runners[n] for n in sorted(self.plan.downstream) if runners[n].inbox is not None
            )
        if self.inbox is not None and self.plan is not None:
            # Resolve the overload policy of every kind the node takes now, not per put
            # (a kind that shows up later, unknown to the spec, is resolved on first sight).
            for kind in (*self.plan.cls.consumes, *self.plan.cls.accepts):
                cls = kind_of(kind)
                if cls is not None:
                    self.inbox.policy(kind, cls.overload)

    def route(self, kind: str) -> tuple[NodeRunner, ...]:
        """Targets for a kind not seen before (slow path, cached)."""
        names = self.session.pipeline.route(self.name, kind)
        targets = tuple(self.session.runner(n) for n in names)
        self.routes[kind] = targets
        return targets

    # -- feeding (hot path) -------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to this node: call it inline, or queue it."""
        inbox = self.inbox
        if inbox is not None:
            result = inbox.put(event)
            if result not in ACCEPTED:
                self.session.dropped(self, event, result)
            return
        session = self.session
        if event.__class__.milestone:
            session.mark_received(event)
        previous = self._current
        self._current = event
        try:
            self.node.on_event(event)  # type: ignore[union-attr]
        except Exception as exc:
            session.node_failed(self, event, exc)
        finally:
            self._current = previous

    def control(self, event: Event) -> None:
        """A control event of a kind the node listens for (synchronous, contained)."""
        previous = self._current
        self._current = event
        try:
            self.node.on_control(event)  # type: ignore[union-attr]
        except Exception as exc:
            self.session.node_failed(self, event, exc)
        finally:
            self._current = previous

    def call_as(self, cause: Event | None, callback: Callable[..., object], args: Any) -> None:
        """Run a timer callback as this node, with ``cause`` as what it is handling."""
        previous = self._current
        self._current = cause
        try:
            callback(*args)
        except Exception as exc:
            self.session.node_failed(self, cause, exc)
        finally:
            self._current = previous

    # -- the worker of a queued node ------------------------------------------------------

    async def work(self) -> None:
        """Handle queued events one at a time until the session closes."""
        inbox = self.inbox
        node = self.node
        assert inbox is not None and node is not None
        session = self.session
        turns = session.turns
        task = asyncio.current_task()
        assert task is not None
        streaming = node.streaming
        while True:
            event = await inbox.get()
            cls = event.__class__
            if cls.fenced and event.turn <= turns.fence:
                session.count_drop(self.name, event.kind, "fenced")
                continue
            if cls.milestone:
                session.mark_received(event)
            self.in_flight = event
            self._part_done = False
            token = CAUSE.set(event)
            try:
                if streaming:
                    await self._pull(node, event)
                else:
                    node.on_event(event)
            except asyncio.CancelledError:
                if self._fence_cancel:
                    self._fence_cancel = False
                    if task.uncancel() > 0 or session.stopping:
                        raise
                elif task.cancelling() > 0:
                    raise  # this task is being cancelled: the session closes, or a foreign cancel
                else:  # the node's own code raised CancelledError: a failure of this event
                    session.node_failed(
                        self, event, RuntimeError("the handler raised CancelledError by itself")
                    )
            except Exception as exc:
                session.node_failed(self, event, exc, part_done=self._part_done)
            finally:
                CAUSE.reset(token)
                self.in_flight = None
            if self._fence_cancel:
                # We asked for a cancellation and the node swallowed it; balance the request.
                self._fence_cancel = False
                if task.uncancel() > 0 or session.stopping:
                    raise asyncio.CancelledError

    async def _pull(self, node: Node[Any], cause: Event) -> None:
        session = self.session
        turns = session.turns
        emission = session.emission
        agen = node.stream(cause)
        fenced_kind = cause.__class__.fenced
        try:
            async for out in agen:
                if fenced_kind and cause.turn <= turns.fence:
                    # The node produced an item after its turn was fenced (it ignored the
                    # cancellation). Drop it, and never pull again.
                    session.count_drop(self.name, out.kind, "fenced")
                    break
                if out.kind in _PART_DONE:
                    self._part_done = True
                emission.emit(self, out, cause)
                for target in self._downstream_queued:
                    if target.inbox.full:  # type: ignore[union-attr]
                        await target.inbox.wait_space()  # type: ignore[union-attr]
        finally:
            try:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()
            except RuntimeError as exc:  # "async generator ignored GeneratorExit"
                session.node_failed(self, cause, exc, part_done=True)

    def cancel_if_fenced(self, fence: int) -> None:
        """Cancel the in-flight handler if it works for a fenced turn (called by the kernel)."""
        current = self.in_flight
        task = self.task
        if (
            current is None
            or task is None
            or self._fence_cancel
            or not current.__class__.fenced
            or current.turn > fence
            or task is asyncio.current_task()
        ):
            return
        self._fence_cancel = True
        task.cancel()

    # -- NodeContext ---------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def log(self) -> logging.Logger:
        return self._log

    def emit(self, event: Event, cause: Event | None = None) -> None:
        if cause is None:
            cause = self._current
            if cause is None:
                cause = CAUSE.get()
        self.session.emission.emit(self, event, cause)  # (a bound method in a slot is slower)

    def call_later(
        self, delay_s: float, callback: Callable[..., object], *args: Any
    ) -> Timer | None:
        session = self.session
        when = session.clock.now_ns() + max(0, round(delay_s * 1e9))
        return session.timers.call_at(self, when, callback, args, self._cause())

    def call_at(self, when_ns: int, callback: Callable[..., object], *args: Any) -> Timer | None:
        return self.session.timers.call_at(self, when_ns, callback, args, self._cause())

    def _cause(self) -> Event | None:
        cause = self._current
        return cause if cause is not None else CAUSE.get()

    def now_ns(self) -> int:
        return self.session.clock.now_ns()

    def is_fenced(self, turn: int) -> bool:
        return turn <= self.session.turns.fence

    def is_held(self, turn: int) -> bool:
        return turn != 0 and turn == self.session.turns.held

    @property
    def conversation(self) -> Conversation:
        return self.session.conversation

    def resource(self, name: str) -> Any:
        return self.session.resource(name)

    def sink(self, name: str) -> Sink:
        return self.session.sink(name)
