"""Small node types used by the kernel tests (not part of the library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from rspp.events import (
    Cancel,
    Event,
    Interrupt,
    LlmDelta,
    TurnCommit,
    TurnConfirm,
    TurnSpeculate,
)
from rspp.events import register as register_kind
from rspp.kernel import Node, NodeConfig
from rspp.kernel.registry import default_registry

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


@registry.register("naive_output")
class NaiveOutput(Node[NodeConfig]):
    """An output that knows nothing of interruptions: no clear_buffer, plays everything.

    The kernel alone must keep the audio of an interrupted turn from the client.
    """

    consumes: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")
    produces: ClassVar[tuple[str, ...]] = ("audio.out",)

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.emitted = 0

    def on_event(self, event: Event) -> None:
        self.queue.put_nowait(event)

    async def run(self) -> None:
        from rspp.events import AudioOut, TtsAudio

        while True:
            chunk = await self.queue.get()
            if isinstance(chunk, TtsAudio):
                await asyncio.sleep(chunk.duration_ns / 1e9)
                self.emitted += 1
                self.emit(AudioOut(pcm=chunk.pcm, text=chunk.text, turn=chunk.turn), chunk)


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
