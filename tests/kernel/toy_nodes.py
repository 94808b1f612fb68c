"""Small node types used by the kernel tests (not part of the library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec

from rspp.events import (
    Cancel,
    Event,
    Interrupt,
    LlmDelta,
    LlmDone,
    TtsAudio,
    TtsDone,
    TurnCommit,
    TurnConfirm,
    TurnDone,
    TurnSpeculate,
)
from rspp.events import register as register_kind
from rspp.kernel import Node, NodeConfig
from rspp.kernel.registry import default_registry
from rspp.testing import FakeLlm

registry = default_registry.copy()


@registry.register("collect")
class Collect(Node[NodeConfig]):
    """Inline; records everything that reaches it, forwards nothing."""

    consumes: ClassVar[tuple[str, ...]] = ("*",)

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)


class SlowConfig(NodeConfig):
    delay_ms: float = 10.0


@registry.register("slow_relay")
class SlowRelay(Node[SlowConfig]):
    """Queued stream node: waits, then forwards the event (a slow stage)."""

    consumes: ClassVar[tuple[str, ...]] = ("*",)
    produces: ClassVar[tuple[str, ...]] = ("*",)
    Config = SlowConfig

    def __init__(self, config: SlowConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.handled: list[Event] = []

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        self.handled.append(event)
        await asyncio.sleep(self.config.delay_ms / 1000)
        yield event


class BurstConfig(NodeConfig):
    count: int = 10
    interval_ms: float = 0.0


@registry.register("burst")
class Burst(Node[BurstConfig]):
    """Stream node: on each commit, yields `count` llm.delta events (a fast producer)."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)
    Config = BurstConfig

    def __init__(self, config: BurstConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.pulled = 0

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        for i in range(self.config.count):
            if self.config.interval_ms:
                await asyncio.sleep(self.config.interval_ms / 1000)
            self.pulled += 1
            yield LlmDelta(text=f"{i} ")


class FailConfig(NodeConfig):
    fail_on: str = "boom"


@registry.register("fail_inline")
class FailInline(Node[FailConfig]):
    """Inline: raises on a delta whose text is `fail_on`, forwards others."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)
    Config = FailConfig

    def on_event(self, event: Event) -> None:
        assert isinstance(event, LlmDelta)
        if event.text == self.config.fail_on:
            raise ValueError("inline node failed on purpose")
        self.emit(event)


@registry.register("fail_stream")
class FailStream(Node[FailConfig]):
    """Stream: raises mid-stream on a commit whose text is `fail_on`."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)
    Config = FailConfig

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, TurnCommit)
        yield LlmDelta(text="first ")
        if event.text == self.config.fail_on:
            raise RuntimeError("stream node failed on purpose")
        yield LlmDelta(text="second ")


@registry.register("stamp_check")
class StampCheck(Node[NodeConfig]):
    """Inline: answers every commit with a fresh delta (header left for the runtime)."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)

    def on_event(self, event: Event) -> None:
        self.emit(LlmDelta(text="fresh"))


@registry.register("interrupter")
class Interrupter(Node[NodeConfig]):
    """Inline: turns a delta saying 'interrupt' or 'cancel' into that control event."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)

    def on_event(self, event: Event) -> None:
        assert isinstance(event, LlmDelta)
        if event.text == "interrupt":
            self.emit(Interrupt())
        elif event.text == "cancel":
            self.emit(Cancel())
        else:
            self.emit(event)


@registry.register("stubborn_run")
class StubbornRun(Node[NodeConfig]):
    """A run() body that swallows the first cancellation (a badly behaved node)."""

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.swallowed = 0

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1


class NaiveOutputState(msgspec.Struct, kw_only=True):
    """The chunks not yet played (the one being played included: it was not sent)."""

    pending: list[TtsAudio | TtsDone]


@registry.register("naive_output")
class NaiveOutput(Node[NodeConfig]):
    """An output that knows nothing of interruptions: no clear_buffer, plays everything.

    The kernel alone must keep the audio of an interrupted turn from the client. It
    does say when a reply has played out (``turn.done`` after the last chunk), as
    every output must: without it a reply is only ended by the no-progress deadline.
    Its private queue is State: audio left out of a snapshot is audio never heard.
    """

    consumes: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")
    produces: ClassVar[tuple[str, ...]] = ("audio.out", "turn.done")
    State = NaiveOutputState

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.current: Event | None = None
        self.emitted = 0

    def on_event(self, event: Event) -> None:
        self.queue.put_nowait(event)

    async def run(self) -> None:
        from rspp.events import AudioOut

        while True:
            self.current = chunk = await self.queue.get()
            if isinstance(chunk, TtsAudio):
                await asyncio.sleep(chunk.duration_ns / 1e9)
                self.emitted += 1
                self.current = None
                self.emit(AudioOut(pcm=chunk.pcm, text=chunk.text, turn=chunk.turn), chunk)
            elif isinstance(chunk, TtsDone):
                while self.ctx.is_held(chunk.turn):  # noqa: ASYNC110 - a toy polls the gate
                    await asyncio.sleep(0.005)
                self.current = None
                self.emit(TurnDone(turn=chunk.turn), chunk)

    def snapshot(self) -> NaiveOutputState:
        queued = list(self.queue._queue)  # type: ignore[attr-defined]
        pending = [self.current, *queued] if self.current is not None else queued
        return NaiveOutputState(pending=[e for e in pending if isinstance(e, TtsAudio | TtsDone)])

    def restore(self, state: NaiveOutputState) -> None:
        for event in state.pending:
            self.queue.put_nowait(event)


@register_kind
class Direct(Event, tag="test.direct", kw_only=True):
    """A test's instruction to the Director node (input: a fact, not reply output)."""

    fenced: ClassVar[bool] = False

    action: str
    text: str = ""
    target: int = 0


@registry.register("director")
class Director(Node[NodeConfig]):
    """Inline: turns test.direct instructions into reply roots and turn controls.

    Stands in for a turn manager so kernel tests can script speculation exactly.
    """

    consumes: ClassVar[tuple[str, ...]] = ("test.direct",)
    produces: ClassVar[tuple[str, ...]] = ("turn.commit", "turn.speculate")

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.roots: list[Event] = []

    def on_event(self, event: Event) -> None:
        assert isinstance(event, Direct)
        made: Event
        if event.action == "commit":
            made = TurnCommit(text=event.text)
        elif event.action == "speculate":
            made = TurnSpeculate(text=event.text)
        elif event.action == "confirm":
            made = TurnConfirm(turn=event.target)
        elif event.action == "cancel":
            made = Cancel(turn=event.target)
        else:
            raise ValueError(event.action)
        self.emit(made)
        self.roots.append(made)


# --------------------------------------------------------------------------- adversaries
# Nodes written the way users write them, including the ways that used to break the
# kernel's guarantees: emitting from timers, run() bodies, control handlers and threads,
# failing, swallowing or raising cancellation, hanging.


class DebounceConfig(NodeConfig):
    delay_ms: float = 30.0


class DebounceState(msgspec.Struct, kw_only=True):
    """The text held back, and when (session time) and for which reply it is released."""

    pending: str
    due_ns: int
    turn: int
    origin_ns: int


@registry.register("debounce")
class Debounce(Node[DebounceConfig]):
    """Inline: collects llm.delta text and releases it from a timer (a common trick).

    The delayed delta is emitted with no explicit cause: the kernel must still know
    which reply it belongs to (the timer's cause is the delta that armed it). Its
    held-back text is state, and moves with a snapshot like any node's state must.
    """

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    produces: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    Config = DebounceConfig
    State = DebounceState

    def __init__(self, config: DebounceConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._pending = ""
        self._timer: Any = None
        self._held: tuple[int, int, int] = (0, 0, 0)  # due, turn, origin of the held text

    def on_event(self, event: Event) -> None:
        if isinstance(event, LlmDelta):
            if self._pending and self._held[1] != event.turn:
                # Text still held for another reply: it is that reply's (the kernel drops
                # it if that reply is over), never the start of this one.
                if self._timer is not None:
                    self._timer.cancel()
                self._flush_moved()
            self._pending += event.text
            if self._timer is None:
                due = self.ctx.now_ns() + round(self.config.delay_ms * 1e6)
                self._held = (due, event.turn, event.origin_ns)
                self._timer = self.ctx.call_at(due, self._flush)
        else:
            self._flush()
            self.emit(event)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            text, self._pending = self._pending, ""
            self.emit(LlmDelta(text=text))

    def _flush_moved(self) -> None:
        """Flush with the held reply's turn (a timer re-armed after a move has no cause)."""
        self._timer = None
        if self._pending:
            _, turn, origin = self._held
            text, self._pending = self._pending, ""
            self.emit(LlmDelta(text=text, turn=turn, origin_ns=origin))

    def snapshot(self) -> DebounceState | None:
        if not self._pending:
            return None
        due, turn, origin = self._held
        return DebounceState(pending=self._pending, due_ns=due, turn=turn, origin_ns=origin)

    def restore(self, state: DebounceState) -> None:
        self._pending = state.pending
        self._held = (state.due_ns, state.turn, state.origin_ns)
        self._timer = self.ctx.call_at(state.due_ns, self._flush_moved)


@registry.register("run_emitter")
class RunEmitter(Node[NodeConfig]):
    """A run() body that emits reply audio with no cause and no turn, every 20 ms."""

    produces: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.emitted = 0

    async def run(self) -> None:
        from rspp.events import TtsAudio
        from rspp.testing import tone

        while True:
            await asyncio.sleep(0.02)
            self.emitted += 1
            self.emit(TtsAudio(pcm=tone(20.0)))


class ThreadConfig(NodeConfig):
    #: "raw": a plain thread hands results back; "to_thread": asyncio.to_thread.
    mode: str = "raw"


@registry.register("thread_llm")
class ThreadLlm(Node[ThreadConfig]):
    """Inline on commits: a worker thread produces the reply and hands each piece back."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)
    Config = ThreadConfig

    def __init__(self, config: ThreadConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.handed_back = 0

    def on_event(self, event: Event) -> None:
        import threading

        loop = asyncio.get_running_loop()

        def work() -> None:
            for word in ("one ", "two ", "three "):
                loop.call_soon_threadsafe(self._back, word)

        if self.config.mode == "raw":
            threading.Thread(target=work).start()
        else:
            # to_thread copies the handler's context into the thread: the cause comes along.
            self._job = loop.create_task(asyncio.to_thread(work))

    def _back(self, word: str) -> None:
        self.handed_back += 1
        self.emit(LlmDelta(text=word))


@registry.register("clear_echo")
class ClearEcho(Node[NodeConfig]):
    """Emits reply audio from its control handler when told to clear (it should not leak)."""

    produces: ClassVar[tuple[str, ...]] = ("tts.audio",)
    controls: ClassVar[tuple[str, ...]] = ("control.clear_buffer",)

    def on_control(self, event: Event) -> None:
        from rspp.events import TtsAudio
        from rspp.testing import tone

        self.emit(TtsAudio(pcm=tone(20.0)))


class FlakyConfig(NodeConfig):
    #: What each request does, in turn (cycled): "ok", "raise" (a bug, not a provider
    #: error), "cancel" (the node raises CancelledError itself), "hang" (the provider
    #: stops answering), "swallow" (ignores the kernel's cancellation once).
    behaviours: list[str] = msgspec.field(default_factory=lambda: ["ok"])
    reply: str = "All good here. Thanks for asking."


@registry.register("flaky_llm")
class FlakyLlm(Node[FlakyConfig]):
    """A streaming LLM stand-in that misbehaves on purpose after its first token."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    Config = FlakyConfig

    def __init__(self, config: FlakyConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.requests = 0
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        behaviours = self.config.behaviours
        behaviour = behaviours[self.requests % len(behaviours)]
        self.requests += 1
        self.tasks.append(asyncio.current_task())
        words = self.config.reply.split(" ")
        await asyncio.sleep(0.05)
        yield LlmDelta(text=words[0] + " ")
        if behaviour == "raise":
            raise KeyError("a bug in the node, not a provider error")
        if behaviour == "cancel":
            raise asyncio.CancelledError
        if behaviour == "hang":
            await asyncio.sleep(3600)
        for word in words[1:]:
            await asyncio.sleep(0.05)
            yield LlmDelta(text=word + " ")
        yield LlmDone()


class DieConfig(NodeConfig):
    after_ms: float = 100.0
    #: "raise": an exception; "base": a BaseException that is not an Exception.
    how: str = "raise"


class Doom(BaseException):
    """A BaseException a careless node lets out (not an Exception, not a cancellation)."""


@registry.register("dying_run")
class DyingRun(Node[DieConfig]):
    """A run() body that dies after a while; counts its starts."""

    Config = DieConfig
    starts = 0

    async def run(self) -> None:
        type(self).starts += 1
        await asyncio.sleep(self.config.after_ms / 1000)
        if self.config.how == "base":
            raise Doom("escaped")
        raise RuntimeError("run() died")


class StallConfig(NodeConfig):
    #: How long the run() body keeps swallowing cancellation (s); inf: forever, until released.
    for_s: float = 1.0


@registry.register("stalling_run")
class StallingRun(Node[StallConfig]):
    """A run() body that swallows cancellation for a while (or until ``release`` is set)."""

    Config = StallConfig

    def __init__(self, config: StallConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.release = asyncio.Event()
        self.swallowed = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        until: float | None = None
        while True:
            try:
                if until is None:
                    await asyncio.sleep(3600)
                elif self.release.is_set() or loop.time() >= until:
                    return
                else:
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.swallowed += 1
                if until is None:
                    until = loop.time() + self.config.for_s


@register_kind
class Job(Event, tag="test.job", kw_only=True):
    """Work pushed into a session (input: a fact, block policy)."""

    fenced: ClassVar[bool] = False
    n: int = 0


class FanConfig(NodeConfig):
    out: int = 1000


@registry.register("fan_out")
class FanOut(Node[FanConfig]):
    """Inline: every job becomes ``out`` jobs at once (an inline cascade ignoring backpressure)."""

    consumes: ClassVar[tuple[str, ...]] = ("test.job",)
    produces: ClassVar[tuple[str, ...]] = ("test.job",)
    Config = FanConfig

    def on_event(self, event: Event) -> None:
        for i in range(self.config.out):
            self.emit(Job(n=i))


@registry.register("shout")
class Shout(Node[NodeConfig]):
    """The README's example: inline, rewrites every delta in capitals."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta",)

    def on_event(self, event: Event) -> None:
        assert isinstance(event, LlmDelta)
        self.emit(LlmDelta(text=event.text.upper()))


@registry.register("failing_llm")
class FailingLlm(FakeLlm):
    """The fake LLM, which a test can make fail (a bug, mid-reply) at its next token."""

    def __init__(self, config: Any, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.fail_next = False
        self.failures = 0

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        async for out in super().stream(event):
            if self.fail_next:
                self.fail_next = False
                self.failures += 1
                raise RuntimeError("the LLM node failed mid-reply (on purpose)")
            yield out
