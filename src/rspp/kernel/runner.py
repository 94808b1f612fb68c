"""The shell around one node instance: how it is driven, fed and cancelled.

An *inline* runner calls the node's ``on_event`` directly from the emitter (no
queue, no task switch). A *queued* runner owns an :class:`~rspp.kernel.inbox.Inbox`
and a worker task that handles one event at a time; for ``stream`` nodes it
pulls the async generator, emitting each item, and stops pulling the moment
the turn it works for is fenced. The runner is also the node's
:class:`~rspp.kernel.node.NodeContext`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rspp.events import Event
from rspp.kernel.inbox import Inbox, PutResult
from rspp.kernel.node import Node
from rspp.kernel.spec import INPUT, Policy

if TYPE_CHECKING:
    from rspp.kernel.conversation import Conversation
    from rspp.kernel.graph import NodePlan
    from rspp.kernel.session import Session, Sink, Timer

__all__ = ["NodeRunner"]

_ACCEPTED = (PutResult.QUEUED, PutResult.OVERFULL)


class NodeRunner:
    """Drives one node for one session (or, with ``plan=None``, stands for the ingress)."""

    __slots__ = (
        "_downstream_queued",
        "_fence_cancel",
        "_log",
        "current",
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
        self.current: Event | None = None
        self.task: asyncio.Task[None] | None = None
        self._fence_cancel = False
        self._downstream_queued: tuple[NodeRunner, ...] = ()
        if plan is not None and plan.queued:
            self.inbox = Inbox(plan.capacity, self._policy_for)

    def _policy_for(self, event: Event) -> Policy:
        assert self.plan is not None
        return self.plan.policy(event.kind, event.overload)

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
            if result not in _ACCEPTED:
                self.session.count_drop(self.name, event.kind, result)
            return
        session = self.session
        if event.__class__.milestone:
            session.mark_received(event)
        previous = self.current
        self.current = event
        try:
            self.node.on_event(event)  # type: ignore[union-attr]
        except Exception as exc:
            session.node_failed(self, event, exc)
        finally:
            self.current = previous

    # -- the worker of a queued node ------------------------------------------------------

    async def work(self) -> None:
        """Handle queued events one at a time until the session closes."""
        inbox = self.inbox
        node = self.node
        assert inbox is not None and node is not None
        session = self.session
        task = asyncio.current_task()
        assert task is not None
        streaming = node.streaming
        while True:
            event = await inbox.get()
            cls = event.__class__
            if cls.fenced and event.turn <= session.fence:
                session.count_drop(self.name, event.kind, "fenced")
                continue
            if cls.milestone:
                session.mark_received(event)
            self.current = event
            try:
                if streaming:
                    await self._pull(node, event)
                else:
                    node.on_event(event)
            except asyncio.CancelledError:
                if not self._fence_cancel:
                    raise
                self._fence_cancel = False
                if task.uncancel() > 0 or session.closing:
                    raise
            except Exception as exc:
                session.node_failed(self, event, exc)
            finally:
                self.current = None
            if self._fence_cancel:
                # We asked for a cancellation and the node swallowed it; balance the request.
                self._fence_cancel = False
                if task.uncancel() > 0 or session.closing:
                    raise asyncio.CancelledError

    async def _pull(self, node: Node[Any], cause: Event) -> None:
        session = self.session
        agen = node.stream(cause)
        fenced_kind = cause.__class__.fenced
        try:
            async for out in agen:
                if fenced_kind and cause.turn <= session.fence:
                    # The node produced an item after its turn was fenced (it ignored the
                    # cancellation). Drop it, and never pull again.
                    session.count_drop(self.name, out.kind, "fenced")
                    break
                session.emit(self, out, cause)
                for target in self._downstream_queued:
                    if target.inbox.full:  # type: ignore[union-attr]
                        await target.inbox.wait_space()  # type: ignore[union-attr]
        finally:
            try:
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()
            except RuntimeError as exc:  # "async generator ignored GeneratorExit"
                session.node_failed(self, cause, exc)

    def cancel_if_fenced(self, fence: int) -> None:
        """Cancel the in-flight handler if it works for a fenced turn (called by the kernel)."""
        current = self.current
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
        self.session.emit(self, event, cause if cause is not None else self.current)

    def call_later(
        self, delay_s: float, callback: Callable[..., object], *args: Any
    ) -> Timer | None:
        return self.session.call_later(self, delay_s, callback, args)

    def now_ns(self) -> int:
        return self.session.now_ns()

    def is_fenced(self, turn: int) -> bool:
        return turn <= self.session.fence

    def is_held(self, turn: int) -> bool:
        return turn == self.session.turns.held

    @property
    def conversation(self) -> Conversation:
        return self.session.conversation

    def resource(self, name: str) -> Any:
        return self.session.resource(name)

    def sink(self, name: str) -> Sink:
        return self.session.sink(name)
