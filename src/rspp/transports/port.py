"""The one interface between a transport and a session.

A transport (the call protocol's endpoint, the Twilio endpoint) never touches
a :class:`~rspp.kernel.Session`: it holds a :class:`SessionPort`, which does
four things -- push input, yield output, report playback, close -- with
values that are ABI events, so that the same transport code works whether the
session runs in this process (:class:`LocalPort`, made by :class:`LocalHost`)
or on a worker elsewhere (the cluster's port, over the store's streams).

What a port yields is what a caller sees (:class:`Visibility`): everything the
session hands to its client sink (bot audio, ``control.clear_buffer``, the end
of each reply) with its output position, and, from the rest of the session's
events, the ones a client shows -- transcripts, turn lifecycle, the bot's text
(a speculation's text only once it is confirmed), errors and per-turn latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rspp.events import Event, LlmDelta, Metrics, PlaybackPosition, TurnSpeculate
from rspp.kernel import (
    Overloaded,
    Pipeline,
    PipelineSpec,
    RsppError,
    Session,
    SessionClosed,
    SessionSnapshot,
)
from rspp.observability import watch

__all__ = [
    "HostFull",
    "LocalHost",
    "LocalPort",
    "OutputBuffer",
    "SessionHost",
    "SessionPort",
    "Visibility",
    "lead_of",
    "local_port",
]

log = logging.getLogger("rspp.transports")

#: Kinds a caller sees from the session's events that do not go to its sink.
VISIBLE_KINDS = frozenset(
    {
        "vad.speech_start",
        "vad.speech_end",
        "asr.partial",
        "asr.final",
        "turn.start",
        "turn.commit",
        "turn.speculate",
        "turn.confirm",
        "turn.interrupted",
        "turn.done",
        "llm.delta",
        "error",
        "metrics",
        "session.end",
    }
)


class HostFull(RsppError):
    """A host refused a new session: it runs as many as it may."""


class SessionPort(Protocol):
    """A transport's handle on one session, wherever it runs."""

    @property
    def session_id(self) -> str: ...

    @property
    def sample_rate(self) -> int:
        """The pipeline's audio rate (the transport resamples to and from it)."""
        ...

    @property
    def lead_ms(self) -> float:
        """How far ahead of real time the session sends bot audio (what a client may hold)."""
        ...

    @property
    def closed(self) -> bool: ...

    async def push(self, event: Event) -> None:
        """Feed one input event; waits while the session cannot take it (backpressure).

        Raises :class:`~rspp.kernel.InvalidInput` for what the session does not
        take and :class:`~rspp.kernel.SessionClosed` once it has ended.
        """
        ...

    def push_nowait(self, event: Event) -> None:
        """Feed one input event now, or raise :class:`~rspp.kernel.Overloaded` (then
        :meth:`push` it, which waits); the other errors as :meth:`push`'s."""
        ...

    def drops(self) -> Mapping[tuple[str, str, str], int]:
        """What the session dropped so far, by ``(node, kind, reason)`` (cumulative)."""
        ...

    def report_playback(self, turn: int, played_ms: float) -> None:
        """The client has played ``played_ms`` of reply ``turn``'s audio (never blocks)."""
        ...

    def output(self) -> AsyncIterator[Event]:
        """What the caller sees, in order; ends when the session has ended."""
        ...

    def listen(self, callback: Callable[[Event], None]) -> None:
        """Hand the output to ``callback`` as it comes instead (``output()`` then only ends).

        Called in order, from wherever the port gets its output (the session's
        own sink call for a local one): no queue, no task switch per frame. The
        callback must be quick and must not raise; what it raises is logged.
        """
        ...

    async def close(self, reason: str = "closed") -> None:
        """End the session (idempotent)."""
        ...


class SessionHost(Protocol):
    """Where sessions are opened: this process, or a cluster's workers."""

    @property
    def pipelines(self) -> tuple[str, ...]:
        """The names of the pipelines this host can run (the first is the default)."""
        ...

    @property
    def ready(self) -> bool:
        """True once the models are loaded and sessions can be opened."""
        ...

    async def open(self, pipeline: str = "", session_id: str | None = None) -> SessionPort: ...

    def describe(self) -> dict[str, dict[str, float]]:
        """Per pipeline: its ``sample_rate`` and ``lead_ms`` (what a client can ask for)."""
        ...

    def active(self) -> int:
        """Sessions open now."""
        ...


class Visibility:
    """Which of a session's events a caller sees, and when (pure; one per session).

    A held speculation (its ``turn.speculate`` and ``llm.delta``) is kept back
    until ``turn.confirm`` and dropped if the speculation is discarded, so the
    client never shows text of a reply that was never given.
    """

    __slots__ = ("_held", "_speculating")

    def __init__(self) -> None:
        self._speculating: set[int] = set()
        self._held: dict[int, list[Event]] = {}

    def resume(self, snapshot: SessionSnapshot) -> None:
        """Take up a session restored from ``snapshot``: a speculation it holds is held here
        too. (This is the port's own state, in no snapshot: a session moved while a
        speculation was held showed its discarded ``turn.interrupted`` to the caller, who
        took it for the reply and spoke on over the real one.)"""
        turns = snapshot.turns
        if turns.state != "speculating" or not turns.active:
            return
        turn = turns.active
        held: list[Event] = []
        asked = snapshot.conversation.tentative
        if asked is not None and asked.turn == turn:
            held.append(TurnSpeculate(session=snapshot.session, turn=turn, text=asked.text))
        reply = snapshot.conversation.reply
        if reply is not None and reply.turn == turn and reply.text:
            # The text it had produced so far, held by the port it was moved from.
            held.append(LlmDelta(session=snapshot.session, turn=turn, text=reply.text))
        self._speculating.add(turn)
        self._held[turn] = held

    def __call__(self, event: Event) -> list[Event]:
        kind = event.kind
        if kind not in VISIBLE_KINDS:
            return []
        turn = event.turn
        if kind == "llm.delta":
            if turn in self._speculating:
                self._held.setdefault(turn, []).append(event)
                return []
            return [event]
        if kind == "turn.speculate":
            self._speculating.add(turn)
            self._held[turn] = [event]  # what it answers: shown with the confirmation
            return []
        if kind == "turn.confirm":
            self._speculating.discard(turn)
            held = self._held.pop(turn, [])
            return [*held[:1], event, *held[1:]]
        if kind in ("turn.interrupted", "turn.done"):
            self._speculating.discard(turn)
            if self._held.pop(turn, None) is not None and kind == "turn.interrupted":
                # A discarded speculation: it was never the reply, so say nothing of it.
                return []
        return [event]


@dataclass
class OutputBuffer:
    """A port's output: bounded, drained by one consumer, or handed to a listener."""

    limit: int
    events: deque[Event] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    #: The session ended (its ``session.end`` is in), or the port was closed.
    ended: bool = False
    closed: bool = False
    callback: Callable[[Event], None] | None = None

    def listen(self, callback: Callable[[Event], None]) -> None:
        """Hand every event to ``callback`` from now on, the ones held first."""
        self.callback = callback
        while self.events:
            self.put(self.events.popleft())

    async def drain(self) -> AsyncIterator[Event]:
        """The events, in order, until the session ended or the port closed."""
        while True:
            while self.events:
                yield self.events.popleft()
            if self.ended or self.closed:
                return
            self.wakeup.clear()
            await self.wakeup.wait()

    def end(self) -> None:
        self.ended = True
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()

    def put(self, event: Event) -> None:
        callback = self.callback
        if callback is not None:
            try:
                callback(event)
            except Exception:
                log.exception("a port's output listener failed on %s", event.kind)
            return
        if len(self.events) >= self.limit:
            # The consumer is stuck: keep the newest (a clear must not wait behind stale text).
            self.events.popleft()
            self.dropped += 1
        self.events.append(event)
        self.wakeup.set()


class LocalPort:
    """A port on a session running in this process."""

    def __init__(self, limit: int = 4096) -> None:
        self._session: Session | None = None
        self._out = OutputBuffer(limit)
        self._visible = Visibility()

    def attach(self, session: Session) -> None:
        """Bind to the session whose sink and observer this port is."""
        self._session = session

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the port is not attached to a session")
        return self._session

    # The session's side ----------------------------------------------------------------

    def send(self, event: Event) -> None:
        """The session's sink: bot audio, clears and reply ends, with their positions."""
        self._out.put(event)

    def observe(self, event: Event) -> None:
        """The session's observer: the rest of what a caller sees."""
        kind = event.kind
        if kind not in VISIBLE_KINDS:
            return  # every audio frame, in and out, ends here
        if type(event) is Metrics and not event.name.startswith("turn"):
            return
        for visible in self._visible(event):
            if visible.pos:  # already sent through the sink
                continue
            self._out.put(visible)
        if kind == "session.end":
            self._out.end()

    # The transport's side --------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def sample_rate(self) -> int:
        return self.session.pipeline.spec.audio.sample_rate

    @property
    def lead_ms(self) -> float:
        return lead_of(self.session.pipeline.spec)

    @property
    def closed(self) -> bool:
        return self._out.closed or not self.session.running

    @property
    def dropped(self) -> int:
        """Output events dropped because nobody consumed them."""
        return self._out.dropped

    async def push(self, event: Event) -> None:
        while True:
            try:
                self.session.push(event)
                return
            except Overloaded:
                await self.session.writable(event.kind)

    def push_nowait(self, event: Event) -> None:
        self.session.push(event)

    def drops(self) -> Mapping[tuple[str, str, str], int]:
        drops = dict(self.session.stats.drops)
        if self._out.dropped:
            drops[("port", "output", "nobody_reading")] = self._out.dropped
        return drops

    def report_playback(self, turn: int, played_ms: float) -> None:
        with contextlib.suppress(SessionClosed):
            self.session.push(PlaybackPosition(turn=turn, played_ms=played_ms))

    def listen(self, callback: Callable[[Event], None]) -> None:
        self._out.listen(callback)

    def output(self) -> AsyncIterator[Event]:
        return self._out.drain()

    async def close(self, reason: str = "closed") -> None:
        self._out.close()
        await self.session.close(reason)


class LocalHost:
    """Sessions of a few pipelines in this process, sharing their loaded models."""

    def __init__(
        self,
        pipelines: Mapping[str, Pipeline],
        *,
        max_sessions: int = 1000,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        if not pipelines:
            raise ValueError("a host needs at least one pipeline")
        self._pipelines = dict(pipelines)
        self._ports: dict[str, LocalPort] = {}
        self._resources = resources
        self.max_sessions = max_sessions
        self._ready = False

    @property
    def pipelines(self) -> tuple[str, ...]:
        return tuple(self._pipelines)

    @property
    def ready(self) -> bool:
        return self._ready

    async def load(self, status: Callable[[str], None] = lambda _: None) -> None:
        """Load every pipeline's models (off the event loop); then the host is ready."""
        from rspp.agent import preload

        for pipeline in self._pipelines.values():
            await preload(pipeline, status)
        self._ready = True

    def describe(self) -> dict[str, dict[str, float]]:
        return {
            name: {"sample_rate": plan.spec.audio.sample_rate, "lead_ms": lead_of(plan.spec)}
            for name, plan in self._pipelines.items()
        }

    def active(self) -> int:
        self._prune()
        return len(self._ports)

    def _prune(self) -> None:
        for sid in [sid for sid, port in self._ports.items() if port.closed]:
            del self._ports[sid]

    async def open(self, pipeline: str = "", session_id: str | None = None) -> LocalPort:
        if not self._ready:
            raise SessionClosed("the host is not ready (models loading)")
        if self.active() >= self.max_sessions:
            raise HostFull(f"this host is full ({self.max_sessions} sessions)")
        name = pipeline or next(iter(self._pipelines))
        plan = self._pipelines.get(name)
        if plan is None:
            raise KeyError(f"no pipeline {name!r} here (have: {', '.join(self._pipelines)})")
        port = local_port(plan, session_id or uuid.uuid4().hex, resources=self._resources)
        watch(port.session)  # this call's tasks log as its session; traced if tracing is on
        await port.session.start()
        sid = port.session_id
        self._ports[sid] = port
        return port

    async def close(self) -> None:
        """Close every session (the server is shutting down)."""
        await asyncio.gather(
            *(port.close("server_shutdown") for port in list(self._ports.values()))
        )


def local_port(
    plan: Pipeline,
    session_id: str,
    *,
    resources: Mapping[str, Any] | None = None,
    snapshot: SessionSnapshot | None = None,
    incarnation: int | None = None,
    swap: bool = False,
) -> LocalPort:
    """A session of ``plan`` (not started) with a port as its client sink and observer."""
    port = LocalPort()
    session = plan.session(
        session_id,
        sinks={_sink_of(plan): port},
        observers=[port.observe],
        resources=resources,
        snapshot=snapshot,
        incarnation=incarnation,
        swap=swap,
    )
    port.attach(session)
    if snapshot is not None:
        port._visible.resume(snapshot)
    return port


def lead_of(spec: PipelineSpec) -> float:
    """The lead of the pipeline's audio output (0 when it has none or does not say)."""
    leads = [
        float(node.config.get("lead_ms", 0.0)) for node in spec.nodes if node.type == "audio_output"
    ]
    return max(leads, default=0.0)


def _sink_of(pipeline: Pipeline) -> str:
    sinks = {plan.sink for plan in pipeline.nodes if plan.sink}
    if len(sinks) != 1:
        raise ValueError(
            f"pipeline {pipeline.name!r} must bind exactly one sink for a caller"
            f" (it binds {sorted(sinks)})"
        )
    return sinks.pop()
