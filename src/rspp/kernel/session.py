"""A running session: the asyncio shell around the pipeline plan and the turn machine.

The session owns every task (one worker per queued node, one per ``run()``
body) in a :class:`asyncio.TaskGroup`, every timer, and the one emission path
that all events take (:meth:`Session.emit`). That path is where the kernel's
guarantees are enforced, whatever the nodes do:

* it stamps the header of fresh events from their cause (session, turn,
  origin time) and numbers them;
* control-lane events are acted on at once, synchronously, before the emitter
  gets control back -- never queued behind data;
* a fenced-kind event of a fenced turn is dropped here, so nothing of an
  interrupted turn reaches a node, a queue or a sink after the interrupt;
* ``turn.commit``, ``control.interrupt``, ``control.cancel`` and ``turn.done``
  are fed to the :class:`~rspp.kernel.turns.TurnMachine`, and its decisions
  are executed in order: fence, clear output buffers, cancel generation,
  record what was delivered.

Closing a session fences everything, cancels every task and awaits them all:
no task outlives its session.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from rspp.events import (
    ABI_VERSION,
    AsrFinal,
    AudioIn,
    AudioOut,
    ClearBuffer,
    Error,
    Event,
    Lane,
    LlmDelta,
    Metrics,
    MsgpackCodec,
    SessionEnd,
    SessionStart,
    TtsAudio,
    TurnCommit,
    TurnInterrupted,
    TurnSpeculate,
    VadSpeechEnd,
)
from rspp.kernel.conversation import Conversation, Message
from rspp.kernel.delivery import DeliveryLedger
from rspp.kernel.errors import BuildError, InvalidInput, SessionClosed, TurnProtocolError
from rspp.kernel.latency import LatencyTracker, SpeculationStats, TurnLatency
from rspp.kernel.runner import NodeRunner
from rspp.kernel.turns import Action, Decision, TurnMachine, TurnSnapshot

if TYPE_CHECKING:
    from rspp.kernel.graph import Pipeline

__all__ = ["Session", "SessionSnapshot", "SessionStats", "Sink", "Timer"]

log = logging.getLogger("rspp.session")

Observer = Callable[[Event], object]

_ROOTS = (TurnCommit, TurnSpeculate)

#: Control kinds a transport may push into a session (a client's "stop", "cancel").
CLIENT_CONTROL = frozenset({"control.interrupt", "control.cancel", "control.clear_buffer"})


class Sink(Protocol):
    """Where a session's output goes: a transport to the client, or a recorder.

    ``send`` must not block: a transport buffers and writes asynchronously. It
    receives the events emitted by the nodes bound to it and every control-lane
    event (``control.clear_buffer`` means: drop what you have buffered, now).
    """

    def send(self, event: Event) -> None: ...


class Timer:
    """A pending ``call_later`` callback; ``cancel()`` it if it is no longer needed."""

    __slots__ = ("_handle", "_owner")

    def __init__(self, handle: asyncio.TimerHandle, owner: set[asyncio.TimerHandle]) -> None:
        self._handle = handle
        self._owner = owner

    def cancel(self) -> None:
        self._handle.cancel()
        self._owner.discard(self._handle)


class SessionStats:
    """Counters a session keeps about itself (exported as metrics by the cluster layer)."""

    __slots__ = ("drops", "errors", "rejected")

    def __init__(self) -> None:
        #: (node, kind, reason) -> count of events dropped (fenced, overload).
        self.drops: Counter[tuple[str, str, str]] = Counter()
        #: node -> count of handler failures.
        self.errors: Counter[str] = Counter()
        #: reason -> count of rejected inputs and illegal events.
        self.rejected: Counter[str] = Counter()

    def dropped(self, reason: str | None = None) -> int:
        """Total drops, or drops for one reason."""
        return sum(n for (_, _, r), n in self.drops.items() if reason is None or r == reason)


class SessionSnapshot(msgspec.Struct, kw_only=True):
    """What a session needs to resume elsewhere (see :meth:`Session.snapshot`)."""

    abi: str
    pipeline: str
    pipeline_version: int
    session: str
    seq: int
    turns: TurnSnapshot
    nodes: dict[str, Any]
    #: Events queued at each node, not yet handled (msgpack-encoded).
    pending: dict[str, list[bytes]]
    #: The event each node was handling when the snapshot was taken (msgpack-encoded).
    in_flight: dict[str, bytes]
    #: The conversation as the user heard it.
    conversation: list[Message] = msgspec.field(default_factory=list)


class Session:
    """One conversation running through a pipeline. Use as ``async with pipeline.session(...)``."""

    def __init__(
        self,
        pipeline: Pipeline,
        session_id: str | None = None,
        *,
        sinks: Mapping[str, Sink] | None = None,
        resources: Mapping[str, Any] | None = None,
        observers: Iterable[Observer] = (),
        snapshot: SessionSnapshot | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.id = session_id or (snapshot.session if snapshot else uuid.uuid4().hex)
        self.turns = TurnMachine()
        self.fence = 0
        self.closing = False
        self.stats = SessionStats()
        self.ledger = DeliveryLedger()
        self.latency = LatencyTracker()
        #: The conversation so far, as the user heard it.
        self.conversation = Conversation()
        #: What speculation did in this session.
        self.speculation = SpeculationStats()
        self._held = 0  # the speculative reply whose output is held back
        self._held_deltas = 0
        self._held_tts_ns = 0
        self._gate: list[tuple[Sink, Event]] = []
        #: Latency breakdown of every finished turn, in order.
        self.turn_latencies: list[TurnLatency] = []
        self._sinks = dict(sinks or {})
        self._resources = dict(resources or {})
        self._observers: list[Observer] = list(observers)
        self._snapshot = snapshot
        self._seq = 0
        self._running = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._input_kinds = frozenset(pipeline.spec.input)
        self._audio = pipeline.spec.audio
        missing = [
            f"node {plan.name!r} sends to sink {plan.sink!r}, but the session has no such sink"
            for plan in pipeline.nodes
            if plan.sink is not None and plan.sink not in self._sinks
        ]
        if missing:
            raise BuildError(missing)
        self._ingress = NodeRunner(self, None)
        self._runners: dict[str, NodeRunner] = {
            plan.name: NodeRunner(self, plan) for plan in pipeline.nodes
        }
        self._queued = tuple(r for r in self._runners.values() if r.inbox is not None)
        self._listeners: dict[str, tuple[NodeRunner, ...]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Instantiate the nodes, restore a snapshot if given, start the tasks."""
        if self._running or self._closed:
            raise SessionClosed(f"session {self.id} cannot be started twice")
        self._loop = asyncio.get_running_loop()
        runners = self._runners
        for runner in (self._ingress, *runners.values()):
            runner.bind(runners)
        listeners: dict[str, list[NodeRunner]] = {}
        for runner in runners.values():
            plan = runner.plan
            assert plan is not None
            runner.node = plan.cls(plan.config, runner)
            runner.sink_target = self._sinks[plan.sink] if plan.sink is not None else None
            for kind in plan.cls.controls:
                listeners.setdefault(kind, []).append(runner)
        self._listeners = {k: tuple(v) for k, v in listeners.items()}
        if self._snapshot is not None:
            self._restore(self._snapshot)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._running = True
        for runner in runners.values():
            node = runner.node
            assert node is not None
            if runner.inbox is not None:
                runner.task = self._spawn(runner.work(), f"rspp:{self.id}:{runner.name}")
            if node.has_run:
                self._spawn(self._run_body(runner), f"rspp:{self.id}:{runner.name}:run")
        self.emit(None, SessionStart(abi=ABI_VERSION, pipeline=self.pipeline.name), None)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def _run_body(self, runner: NodeRunner) -> None:
        try:
            await runner.node.run()  # type: ignore[union-attr]
        except Exception as exc:
            self.node_failed(runner, None, exc)

    async def close(self, reason: str = "closed") -> None:
        """Fence everything, cancel every task and timer, and wait for all of them to end."""
        if self._closed:
            return
        self._closed = True
        if not self._running:
            return
        self._execute(self.turns.close())
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
        self.emit(None, SessionEnd(reason=reason), None)
        self.closing = True
        self._running = False
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            # A node that swallows cancellation is cancelled again until it gives up.
            _, pending = await asyncio.wait(pending, timeout=0.05)
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)
        for runner in self._runners.values():
            try:
                runner.node.close()  # type: ignore[union-attr]
            except Exception as exc:
                self.node_failed(runner, None, exc)

    @property
    def running(self) -> bool:
        """Whether the session takes input."""
        return self._running

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """Every task this session has started."""
        return tuple(self._tasks)

    # -- input ------------------------------------------------------------------------------

    def push(self, event: Event) -> None:
        """Feed one input event (from a transport) into the session.

        Data events must be of a kind listed in the spec's ``input``; audio must
        match the spec's format. A rejected event raises :class:`InvalidInput`
        and is counted; the session carries on. The control kinds in
        :data:`CLIENT_CONTROL` (a client's "stop") are acted on at once; other
        control kinds are the kernel's own and are rejected. The header is the
        session's to assign: only a non-zero ``origin_ns`` (capture time, in
        this session's clock) is kept, and the ``turn`` of a control event (the
        turn a cancel targets).
        """
        if not self._running:
            raise SessionClosed(f"session {self.id} is not running")
        cls = event.__class__
        if cls.lane is Lane.CONTROL:
            if event.kind not in CLIENT_CONTROL:
                self._reject("input_kind")
                raise InvalidInput(f"{event.kind!r} cannot be sent into a session")
        else:
            if event.kind not in self._input_kinds:
                self._reject("input_kind")
                raise InvalidInput(f"{event.kind!r} is not an input kind of {self.pipeline.name!r}")
            if cls is AudioIn:
                self._check_audio(event)  # type: ignore[arg-type]
            event.turn = 0
        event.session = self.id
        event.seq = 0
        self.emit(self._ingress, event, None)

    def _check_audio(self, audio: AudioIn) -> None:
        want = self._audio
        if audio.sample_rate != want.sample_rate or audio.channels != want.channels:
            self._reject("audio_format")
            raise InvalidInput(
                f"audio is {audio.sample_rate} Hz x{audio.channels}, this session takes "
                f"{want.sample_rate} Hz x{want.channels} PCM16"
            )
        if not audio.pcm or len(audio.pcm) % (2 * audio.channels):
            self._reject("audio_format")
            raise InvalidInput(
                f"audio payload of {len(audio.pcm)} bytes is not whole PCM16 frames "
                f"of {audio.channels} channel(s)"
            )

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] += 1

    # -- the emission path (hot) ---------------------------------------------------------

    def emit(self, source: NodeRunner | None, event: Event, cause: Event | None) -> None:
        """Stamp, check and route one event. ``source`` None means the kernel itself.

        The kernel's hooks (the turn machine, latency marks, control actions) act on
        an event once, when it is first emitted; a node that forwards an event it
        received (same object, ``seq`` already set) only routes it further.
        """
        fresh = event.seq == 0
        if fresh:
            if cause is None:
                self._stamp(event)
            else:
                event.session = self.id
                if event.turn == 0:
                    event.turn = cause.turn
                if event.origin_ns == 0:
                    event.origin_ns = cause.origin_ns
                self._seq += 1
                event.seq = self._seq
        cls = event.__class__
        if cls.lane:
            if fresh:
                self._control(source, event)
            return
        if fresh and cls in _ROOTS and not self._root(source, event):
            return
        if cls.fenced and event.turn <= self.fence:
            self.count_drop(source.name if source else "kernel", event.kind, "fenced")
            return
        if fresh and cls.milestone:
            self._mark(event)
        if source is None:
            self._notify_observers(event)
            return
        # Sink and observers first, then the consumers: whatever the consumers emit in
        # turn comes after this event everywhere (sinks see seq in order).
        sink = source.sink_target
        if sink is not None:
            if cls.fenced and event.turn == self._held:
                self._gate.append((sink, event))  # speculative: held back until confirmed
            else:
                self._send(sink, event)
        if self._observers:
            self._notify_observers(event)
        targets = source.routes.get(event.kind)
        if targets is None:
            targets = source.route(event.kind)
        for target in targets:
            target.deliver(event)

    def _send(self, sink: Sink, event: Event) -> None:
        """Hand one event to a sink; audio counts as delivered."""
        if event.__class__ is AudioOut:
            self.ledger.delivered(event.turn, event.duration_ns, event.text)
        try:
            sink.send(event)
        except Exception as exc:
            self._sink_failed(sink, event, exc)

    def _root(self, source: NodeRunner | None, event: Event) -> bool:
        """A reply starts (commit or speculation): number it, run the turn machine."""
        speculative = event.__class__ is TurnSpeculate
        try:
            decision = self.turns.speculate() if speculative else self.turns.commit()
        except TurnProtocolError as exc:
            self._illegal(source, event, exc)
            return False
        event.turn = decision.committed  # the kernel numbers replies, whatever the cause was
        self._execute(decision)
        self.conversation.user(event.turn, event.text, tentative=speculative)  # type: ignore[attr-defined]
        if speculative:
            self.speculation.attempts += 1
        self.latency.root(
            event.turn, self.now_ns(), time.perf_counter_ns(), speculative=speculative
        )
        return True

    def _mark(self, event: Event) -> None:
        """Bookkeeping for the first emission of a milestone event (not fenced)."""
        cls = event.__class__
        now = self.now_ns()
        if cls is VadSpeechEnd or cls is AsrFinal:
            self.latency.user_mark(event.kind, now, event.origin_ns)
            return
        if cls is LlmDelta:
            self.conversation.assistant_delta(event.turn, event.text)  # type: ignore[attr-defined]
            if event.turn == self._held:
                self._held_deltas += 1
        elif cls is TtsAudio and event.turn == self._held:
            self._held_tts_ns += event.duration_ns  # type: ignore[attr-defined]
        self.latency.emitted(event.kind, event.turn, now, time.perf_counter_ns())

    def mark_received(self, event: Event) -> None:
        """A milestone event was handed to its consumer (called by runners)."""
        self.latency.received(event.kind, event.turn, self.now_ns(), time.perf_counter_ns())

    # -- the control lane ------------------------------------------------------------------

    def _control(self, source: NodeRunner | None, event: Event) -> None:
        kind = event.kind
        decision: Decision | None = None
        try:
            if kind == "control.interrupt":
                decision = self.turns.interrupt()
            elif kind == "control.cancel":
                decision = self.turns.cancel(event.turn)
            elif kind == "turn.confirm":
                decision = self.turns.confirm(event.turn)
            elif kind == "turn.done":
                decision = self.turns.played(event.turn)
        except TurnProtocolError as exc:
            self._illegal(source, event, exc)
            return
        # The request itself is announced first so that sinks see seq in order; the
        # decision's actions follow within the same synchronous call.
        self._notify(event)
        if decision is not None and decision.actions:
            self._execute(decision)
        if kind == "turn.done" and decision is not None and decision.target:
            delivered = self.ledger.record(decision.target)
            self.conversation.finished(decision.target)
            self._finish_turn(decision.target, interrupted=False, delivered=delivered.delivered_ms)

    def _notify(self, event: Event, *, public: bool = True) -> None:
        """Deliver a control event to the nodes that listen for its kind, the sinks, observers.

        Sinks (the client) are told only about public kinds and public outcomes:
        nothing about a speculation, which the user never hears of.
        """
        for runner in self._listeners.get(event.kind, ()):
            try:
                runner.node.on_control(event)  # type: ignore[union-attr]
            except Exception as exc:
                self.node_failed(runner, event, exc)
        if public and event.__class__.public:
            for sink in self._sinks.values():
                self._send(sink, event)
        if self._observers:
            self._notify_observers(event)

    def _execute(self, decision: Decision) -> None:
        """Carry out a turn decision, in the cancellation-first order."""
        actions = decision.actions
        fence = self.turns.fence
        public = not decision.speculative  # a dropped speculation is nobody's business
        if Action.FENCE in actions and fence > self.fence:
            self.fence = fence
            for runner in self._queued:
                for dropped in runner.inbox.purge(  # type: ignore[union-attr]
                    lambda ev: ev.__class__.fenced and ev.turn <= fence
                ):
                    self.count_drop(runner.name, dropped.kind, "fenced")
            if self._gate:
                self.count_drop("gate", "held", "fenced")
                self._gate = [(s, ev) for s, ev in self._gate if ev.turn > fence]
        if Action.CLEAR in actions:
            clear = ClearBuffer(turn=fence)
            self._stamp(clear)
            self._notify(clear, public=public)
        if Action.CANCEL in actions:
            for runner in self._queued:
                runner.cancel_if_fenced(fence)
        target = decision.target
        if Action.RECORD in actions and target:
            if decision.speculative:
                began = self.latency.started(target)
                llm_ns = 0 if began is None else self.now_ns() - began
                self.speculation.ended(
                    decision.reason, self._held_deltas, self._held_tts_ns, llm_ns
                )
                self.conversation.drop(target)
                self.latency.drop(target)
                record = TurnInterrupted(turn=target, reason=decision.reason)
                self._stamp(record)
                self._notify(record, public=False)
            else:
                delivered = self.ledger.record(target)
                record = TurnInterrupted(
                    turn=target,
                    reason=decision.reason,
                    delivered_ms=delivered.delivered_ms,
                    heard_text=delivered.heard_text,
                )
                self._stamp(record)
                self.conversation.interrupted(target, delivered.heard_text)
                self._notify(record)
                self._finish_turn(target, interrupted=True, delivered=delivered.delivered_ms)
        if Action.RELEASE in actions:
            self._release(decision.committed)
        self._held = self.turns.held
        if Action.ADVANCE in actions and self._held:
            self._held_deltas = self._held_tts_ns = 0

    def _release(self, turn: int) -> None:
        """A speculation was confirmed: it is the reply now; what it held goes out at once."""
        self.speculation.hits += 1
        self.conversation.confirm(turn)
        self.latency.decided(turn, self.now_ns())
        self._held = 0
        gate, self._gate = self._gate, []
        for sink, event in gate:
            self._send(sink, event)

    def _finish_turn(self, turn: int, *, interrupted: bool, delivered: float) -> None:
        record = self.latency.finish(turn, interrupted=interrupted, delivered_ms=delivered)
        self.turn_latencies.append(record)
        if record.saved_ms is not None:
            self.speculation.saved_ms.append(record.saved_ms)
        self.publish(Metrics(turn=turn, name="turn.latency", values=record.values()))

    # -- diagnostics ---------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Stamp a kernel-made diagnostic event (error, metrics) and give it to the observers."""
        self._stamp(event)
        self._notify_observers(event)

    def _stamp(self, event: Event) -> None:
        """Stamp an event that has no cause: the current turn, the current time."""
        event.session = self.id
        if event.turn == 0:
            event.turn = self.turns.epoch
        if event.origin_ns == 0:
            event.origin_ns = self.now_ns()
        self._seq += 1
        event.seq = self._seq

    def _notify_observers(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("session %s: observer %r failed", self.id, observer)

    def count_drop(self, node: str, kind: str, reason: str) -> None:
        """Count one dropped event."""
        self.stats.drops[(node, kind, reason)] += 1

    def node_failed(self, runner: NodeRunner, event: Event | None, exc: BaseException) -> None:
        """A node raised: log it, count it, publish an ``error`` event; the session goes on."""
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

    def _sink_failed(self, sink: Sink, event: Event, exc: Exception) -> None:
        """A transport raised in ``send``: count and log it; the kernel's work goes on."""
        name = next((n for n, s in self._sinks.items() if s is sink), "?")
        self.stats.errors[f"sink:{name}"] += 1
        log.error("session %s: sink %r failed on %s: %r", self.id, name, event.kind, exc)

    def _illegal(self, source: NodeRunner | None, event: Event, exc: TurnProtocolError) -> None:
        name = source.name if source is not None else "kernel"
        self.stats.rejected["turn_protocol"] += 1
        log.warning("session %s: dropped %s from %r: %s", self.id, event.kind, name, exc)
        self.publish(
            Error(turn=event.turn, source=name, code="TurnProtocolError", message=str(exc))
        )

    # -- services for nodes --------------------------------------------------------------

    def now_ns(self) -> int:
        """The session clock in nanoseconds (the event loop's clock: monotonic or virtual)."""
        loop = self._loop or asyncio.get_running_loop()
        return round(loop.time() * 1e9)

    def call_later(
        self,
        runner: NodeRunner,
        delay_s: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> Timer | None:
        """A timer owned by the session; its callback runs as the node, errors are contained."""
        if not self._running:
            return None
        loop = self._loop
        assert loop is not None
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            try:
                callback(*args)
            except Exception as exc:
                self.node_failed(runner, None, exc)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)
        return Timer(handle, self._timers)

    def resource(self, name: str) -> Any:
        try:
            return self._resources[name]
        except KeyError:
            raise KeyError(f"session {self.id} has no resource {name!r}") from None

    def sink(self, name: str) -> Sink:
        try:
            return self._sinks[name]
        except KeyError:
            raise KeyError(f"session {self.id} has no sink {name!r}") from None

    def runner(self, name: str) -> NodeRunner:
        """The runner of node ``name``."""
        return self._runners[name]

    def node(self, name: str) -> Any:
        """The node instance called ``name`` (for tests and tools)."""
        return self._runners[name].node

    def observe(self, observer: Observer) -> None:
        """Add an observer: it is called with every event the session emits or publishes."""
        self._observers.append(observer)

    # -- moving a session --------------------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        """Capture what is needed to resume this session from here.

        Take it at a quiet point (between turns) for an exact resume: queued events
        are captured and re-queued on restore; an event being handled is captured in
        ``in_flight`` but not replayed automatically (replaying generation could
        repeat output the user already heard).
        """
        codec = MsgpackCodec()
        nodes: dict[str, Any] = {}
        pending: dict[str, list[bytes]] = {}
        in_flight: dict[str, bytes] = {}
        for name, runner in self._runners.items():
            node = runner.node
            if node is not None:
                state = node.snapshot()
                if state is not None:
                    nodes[name] = state
            if runner.inbox is not None and len(runner.inbox):
                pending[name] = [codec.encode(ev) for ev in runner.inbox]
            if runner.inbox is not None and runner.current is not None:
                in_flight[name] = codec.encode(runner.current)
        return SessionSnapshot(
            abi=ABI_VERSION,
            pipeline=self.pipeline.name,
            pipeline_version=self.pipeline.spec.version,
            session=self.id,
            seq=self._seq,
            turns=self.turns.snapshot(),
            nodes=nodes,
            pending=pending,
            in_flight=in_flight,
            conversation=self.conversation.snapshot(),
        )

    def _restore(self, snap: SessionSnapshot) -> None:
        if (
            snap.pipeline != self.pipeline.name
            or snap.abi.split(".")[0] != ABI_VERSION.split(".")[0]
        ):
            raise InvalidInput(
                f"snapshot of {snap.pipeline!r} (ABI {snap.abi}) cannot be restored into "
                f"{self.pipeline.name!r} (ABI {ABI_VERSION})"
            )
        self._seq = snap.seq
        self.turns = TurnMachine.restore(snap.turns)
        self.fence = self.turns.fence
        self._held = self.turns.held
        self.conversation.restore(snap.conversation)
        codec = MsgpackCodec()
        for name, state in snap.nodes.items():
            self._runners[name].node.restore(state)  # type: ignore[union-attr]
        for name, events in snap.pending.items():
            inbox = self._runners[name].inbox
            assert inbox is not None
            for raw in events:
                inbox.put(codec.decode(raw))
