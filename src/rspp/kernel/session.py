"""A running session: one conversation through a pipeline.

The session is the small object that puts the kernel's concepts together,
each in a module of its own:

* :mod:`~rspp.kernel.turns` -- the turn machine (what may be heard, what an
  interruption kills), and :mod:`~rspp.kernel.executor`, which carries out
  its decisions in the cancellation-first order;
* :mod:`~rspp.kernel.emission` -- the one path every event takes: stamping,
  the control lane, reply membership, routing;
* :mod:`~rspp.kernel.sinks` -- output positions, ordering and the
  speculation gate between the kernel and its sinks;
* :mod:`~rspp.kernel.ingress` -- what a transport may push, numbered, with
  backpressure;
* :mod:`~rspp.kernel.lifecycle` -- the tasks, owned and supervised by the
  session's own owner task; close;
* :mod:`~rspp.kernel.watchdog` -- replies that stop making progress;
* :mod:`~rspp.kernel.snapshot` -- moving a session between processes;
* :mod:`~rspp.kernel.clock`, :mod:`~rspp.kernel.timers` -- session time.

Every reply ends, whatever a node does: played out, interrupted, superseded,
cancelled, cleared by the client, failed (a node raised while working on it),
stalled (no progress before the deadline), moved (a restore could not
continue it) or closed -- always with a ``turn.interrupted``/``turn.done``,
counted in :attr:`SessionStats.replies`, and the next user turn works.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rspp.events import ABI_VERSION, Error, Event, Metrics, SessionEnd, SessionStart, UnknownEvent
from rspp.kernel.clock import SessionClock
from rspp.kernel.conversation import Conversation
from rspp.kernel.delivery import DeliveryLedger
from rspp.kernel.emission import EmissionPath, Observer
from rspp.kernel.errors import BuildError, SessionClosed, TurnProtocolError
from rspp.kernel.executor import TurnExecutor
from rspp.kernel.inbox import PutResult
from rspp.kernel.ingress import Ingress
from rspp.kernel.latency import LatencyTracker, SpeculationStats, TurnLatency
from rspp.kernel.lifecycle import TaskOwner
from rspp.kernel.runner import NodeRunner
from rspp.kernel.sinks import Outbound, Sink
from rspp.kernel.snapshot import SessionSnapshot, capture, restore
from rspp.kernel.stats import SessionStats
from rspp.kernel.timers import Timer, Timers
from rspp.kernel.turns import TurnMachine
from rspp.kernel.watchdog import ReplyWatchdog

if TYPE_CHECKING:
    from rspp.kernel.graph import Pipeline

__all__ = ["Session", "SessionSnapshot", "SessionStats", "Sink", "Timer"]

log = logging.getLogger("rspp.session")


class Session:
    """One conversation running through a pipeline. Use as ``async with pipeline.session(...)``.

    ``snapshot`` restores a session taken elsewhere (see :mod:`rspp.kernel.snapshot`);
    ``incarnation`` numbers this run of it (default: the snapshot's plus one, or 1);
    ``resume_at_ns`` is the session time it resumes at (default: the snapshot's plus
    the wall-clock time since it was taken); ``swap`` restores a snapshot of another
    pipeline at a turn boundary (:func:`~rspp.kernel.snapshot.restore`).
    ``close_timeout_s`` bounds how long closing waits for a node that ignores
    cancellation.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        session_id: str | None = None,
        *,
        sinks: Mapping[str, Sink] | None = None,
        resources: Mapping[str, Any] | None = None,
        observers: Iterable[Observer] = (),
        snapshot: SessionSnapshot | None = None,
        incarnation: int | None = None,
        resume_at_ns: int | None = None,
        swap: bool = False,
        close_timeout_s: float = 2.0,
    ) -> None:
        self.pipeline = pipeline
        self.id = session_id or (snapshot.session if snapshot else uuid.uuid4().hex)
        self.log = log
        self.turns = TurnMachine()
        self.clock = SessionClock()
        self.stats = SessionStats()
        self.ledger = DeliveryLedger()
        self.latency = LatencyTracker()
        #: The conversation so far, as the user heard it.
        self.conversation = Conversation()
        #: What speculation did in this session.
        self.speculation = SpeculationStats()
        #: Latency breakdown of every finished turn, in order.
        self.turn_latencies: list[TurnLatency] = []
        #: Why the session failed (a node's task died for good), or None.
        self.failure: str | None = None
        #: Why it closed ("closed", "failed", ...), once it is closing.
        self.close_reason = ""
        self.state = "new"
        sinks = dict(sinks or {})
        self.outbound = Outbound(self.id, sinks, self.turns, self.ledger, self.stats)
        if incarnation is not None:
            self.outbound.incarnation = incarnation
        self.emission = EmissionPath(self)
        self.emission.observers.extend(observers)
        self.executor = TurnExecutor(self)
        self.watchdog = ReplyWatchdog(self, pipeline.spec.reply.no_progress_ms)
        self.timers = Timers(self)
        self.owner = TaskOwner(self, close_timeout_s)
        self._resources = dict(resources or {})
        self._snapshot = snapshot
        self._incarnation = incarnation
        self._resume_at_ns = resume_at_ns
        self._swap = swap
        missing = [
            f"node {plan.name!r} sends to sink {plan.sink!r}, but the session has no such sink"
            for plan in pipeline.nodes
            if plan.sink is not None and plan.sink not in sinks
        ]
        if missing:
            raise BuildError(missing)
        self.runners: dict[str, NodeRunner] = {
            plan.name: NodeRunner(self, plan) for plan in pipeline.nodes
        }
        self.ingress = Ingress(self, NodeRunner(self, None))
        # The hot path: transports call the ingress directly (one Python call fewer).
        self.push = self.ingress.push  # type: ignore[method-assign]
        #: The runners with an inbox and a worker.
        self.queued = tuple(r for r in self.runners.values() if r.inbox is not None)
        self._reported: set[tuple[str, str]] = set()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Instantiate the nodes, restore a snapshot if given, start the tasks."""
        if self.state != "new":
            raise SessionClosed(f"session {self.id} cannot be started twice")
        loop = asyncio.get_running_loop()
        self.clock.bind(loop)
        runners = self.runners
        for runner in (self.ingress.runner, *runners.values()):
            runner.bind(runners)
        listeners: dict[str, list[NodeRunner]] = {}
        for runner in runners.values():
            plan = runner.plan
            assert plan is not None
            runner.node = plan.cls(plan.config, runner)
            runner.sink_target = self.outbound.sinks[plan.sink] if plan.sink is not None else None
            for kind in plan.cls.controls:
                listeners.setdefault(kind, []).append(runner)
        self.emission.listeners = {k: tuple(v) for k, v in listeners.items()}
        continues = True
        if self._snapshot is not None:
            continues = restore(
                self,
                self._snapshot,
                incarnation=self._incarnation,
                resume_at_ns=self._resume_at_ns,
                swap=self._swap,
            )
        self.state = "running"
        self.owner.start(loop)
        for runner in runners.values():
            node = runner.node
            plan = runner.plan
            assert node is not None and plan is not None
            if runner.inbox is not None:
                self.owner.spawn(runner, "worker", runner.work, plan.restarts)
            if node.has_run:
                self.owner.spawn(runner, "run", node.run, plan.restarts)
        self.emission.emit(None, SessionStart(abi=ABI_VERSION, pipeline=self.pipeline.name), None)
        if not continues:
            self.fail_reply(self.turns.active, "moved")
        self.watchdog.follow()

    def begin_close(self, reason: str = "closed") -> None:
        """The synchronous part of closing (idempotent): fence everything, say goodbye.

        From here on nothing of any reply reaches a sink and ``push`` is refused;
        the owner task then cancels and awaits every task. Safe to call from a
        node, a sink or a timer; ``await close()`` to wait for the end.
        """
        if self.state != "running":
            if self.state == "new":
                self.state = "closed"
            return
        self.state = "closing"
        self.close_reason = reason
        self.watchdog.stop()
        self.executor.execute(self.turns.close())
        spec = self.speculation
        if spec.attempts:
            self.publish(
                Metrics(
                    name="session.speculation",
                    values={
                        "attempts": spec.attempts,
                        "hits": spec.hits,
                        "misses": spec.misses,
                        "discarded": spec.discarded,
                        "wasted_llm_deltas": spec.wasted_llm_deltas,
                        "wasted_llm_s": spec.wasted_llm_s,
                        "wasted_tts_s": spec.wasted_tts_s,
                        "saved_ms_total": sum(spec.saved_ms),
                    },
                )
            )
        self.emission.emit(None, SessionEnd(reason=reason), None)
        self.timers.cancel_all()
        self.owner.request_stop()

    async def close(self, reason: str = "closed") -> None:
        """Close the session and wait until every task has ended (idempotent, cancel-safe)."""
        self.begin_close(reason)
        await self.owner.wait()

    async def wait_closed(self) -> None:
        """Wait until the session has closed (by ``close()``, or by failing)."""
        if self.state == "new":
            return
        await self.owner.wait()

    def finished(self) -> None:
        """Every task has ended (or been abandoned): release what the nodes hold."""
        for runner in self.runners.values():
            if runner.node is None:
                continue
            try:
                runner.node.close()
            except Exception as exc:
                self.node_failed(runner, None, exc)
        self.state = "closed"

    def fail(self, reason: str) -> None:
        """The session cannot go on (a node's task died for good): close it, loudly."""
        if self.failure is None:
            self.failure = reason
        log.error("session %s failed: %s", self.id, reason)
        self.publish(Error(source="kernel", code="SessionFailed", message=reason))
        self.begin_close("failed")

    @property
    def running(self) -> bool:
        """Whether the session takes input."""
        return self.state == "running"

    @property
    def stopping(self) -> bool:
        """Whether the session is closing (task endings are expected)."""
        return self.owner.stopping

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """Every task this session has started."""
        return tuple(self.owner.tasks)

    # -- input ------------------------------------------------------------------------------

    def push(self, event: Event, *, seq: int | None = None) -> bool:
        """Feed one input event (from a transport) into the session.

        See :mod:`rspp.kernel.ingress`: raises :class:`InvalidInput` for what the
        session does not take, :class:`Overloaded` when the node that takes it is
        full (push again after ``await writable(kind)``), :class:`SessionClosed`
        after close. Returns False, doing nothing, for a duplicate ``seq``.
        """
        return self.ingress.push(event, seq=seq)

    async def writable(self, kind: str = "audio.in") -> None:
        """Wait until a push of ``kind`` would not be refused as :class:`Overloaded`."""
        await self.ingress.writable(kind)

    # -- what the parts report ---------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Stamp a kernel-made diagnostic event (error, metrics) and give it to the observers."""
        self.emission.stamp(event)
        self.emission.notify_observers(event)

    def count_drop(self, node: str, kind: str, reason: str, n: int = 1) -> None:
        """Count dropped events."""
        self.stats.drops[(node, kind, reason)] += n

    def dropped(self, runner: NodeRunner, event: Event, result: str) -> None:
        """A node's inbox did not take ``event`` (its overload policy)."""
        self.count_drop(runner.name, event.kind, result)
        if result == PutResult.OVERFLOW and (runner.name, event.kind) not in self._reported:
            self._reported.add((runner.name, event.kind))
            message = (
                f"inbox full past its limit: {event.kind!r} dropped (a producer that does not "
                "wait for backpressure: an inline cascade, a timer or run() body emitting "
                "faster than the node takes it)"
            )
            log.error("session %s: node %r: %s", self.id, runner.name, message)
            self.publish(Error(source=runner.name, code="Overflow", message=message))

    def mark_received(self, event: Event) -> None:
        """A milestone event was handed to its consumer (called by runners)."""
        self.latency.received(event.kind, event.turn, self.clock.now_ns(), time.perf_counter_ns())

    def node_failed(
        self,
        runner: NodeRunner,
        event: Event | None,
        exc: BaseException,
        *,
        part_done: bool = False,
    ) -> None:
        """A node raised: log it, count it, publish an ``error`` event; the session goes on.

        If it was working on the reply in progress, that reply cannot be trusted to
        be complete: the kernel ends it (reason ``failed``) -- unless the node had
        already ended its part of it (yielded its ``llm.done``/``tts.done``).
        """
        self.stats.errors[runner.name] += 1
        runner.log.error(
            "session %s: node %r failed on %s: %r",
            self.id,
            runner.name,
            event.kind if event is not None else "run()",
            exc,
            exc_info=exc,
        )
        self.publish(
            Error(
                turn=event.turn if event is not None else 0,
                source=runner.name,
                code=type(exc).__name__,
                message=str(exc),
            )
        )
        if event is None or part_done:
            return
        cls = event.__class__
        reply = cls.fenced and not cls.lane and cls is not UnknownEvent
        if reply and event.turn == self.turns.active:
            self.fail_reply(event.turn, "failed")

    def task_died(
        self, runner: NodeRunner, what: str, problem: object, *, restarting: bool
    ) -> None:
        """A node's task ended unexpectedly (the owner restarts it or fails the session)."""
        self.stats.errors[runner.name] += 1
        then = "restarting it" if restarting else "no restarts left"
        message = f"the {what} task of node {runner.name!r} died ({problem!r}); {then}"
        log.error("session %s: %s", self.id, message)
        self.publish(Error(source=runner.name, code="TaskDied", message=message))

    def fail_reply(self, turn: int, reason: str) -> None:
        """End reply ``turn`` now because it cannot complete (failed, stalled, moved)."""
        try:
            decision = self.turns.fail(turn, reason)
        except TurnProtocolError:
            return  # closed
        if decision.accepted:
            self.executor.execute(decision)

    def illegal(self, source: NodeRunner | None, event: Event, exc: TurnProtocolError) -> None:
        name = source.name if source is not None else "kernel"
        self.stats.rejected["turn_protocol"] += 1
        log.warning("session %s: dropped %s from %r: %s", self.id, event.kind, name, exc)
        self.publish(
            Error(turn=event.turn, source=name, code="TurnProtocolError", message=str(exc))
        )

    # -- services ------------------------------------------------------------------------

    def now_ns(self) -> int:
        """Session time in nanoseconds (see :mod:`rspp.kernel.clock`)."""
        return self.clock.now_ns()

    @property
    def fence(self) -> int:
        """The highest turn whose reply is over (the turn machine's)."""
        return self.turns.fence

    @property
    def seq(self) -> int:
        """The last ``seq`` given."""
        return self.emission.seq

    @property
    def input_seq(self) -> int:
        """The last input sequence number admitted."""
        return self.ingress.seq

    @property
    def incarnation(self) -> int:
        """This run's incarnation: stamped (``inc``) on everything sent to a sink."""
        return self.outbound.incarnation

    def resource(self, name: str) -> Any:
        try:
            return self._resources[name]
        except KeyError:
            raise KeyError(f"session {self.id} has no resource {name!r}") from None

    def sink(self, name: str) -> Sink:
        try:
            return self.outbound.sinks[name]
        except KeyError:
            raise KeyError(f"session {self.id} has no sink {name!r}") from None

    def runner(self, name: str) -> NodeRunner:
        """The runner of node ``name``."""
        return self.runners[name]

    def node(self, name: str) -> Any:
        """The node instance called ``name`` (for tests and tools)."""
        return self.runners[name].node

    def observe(self, observer: Observer) -> None:
        """Add an observer: it is called with every event the session emits or publishes."""
        self.emission.observers.append(observer)

    # -- moving a session --------------------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        """Capture what is needed to resume this session from here, at any instant.

        See :mod:`rspp.kernel.snapshot` for what a restore does with each piece.
        """
        return capture(self)
