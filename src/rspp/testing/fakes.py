"""Fake ASR, LLM and TTS nodes with configurable latency profiles.

They are fakes, and named so: they do not recognise or generate anything.
They stand *around* the kernel in tests, the demo and the benchmarks, with the
timing behaviour of real models (time to first output, output rate,
real-time factor) so that the runtime can be exercised and measured
deterministically under :class:`~rspp.testing.VirtualClock`.

Every unit of work they produce is logged with a global tick
(:func:`tick`), so a test can prove what was produced *after* an interruption
was accepted, independently of what the kernel let through.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    Event,
    LlmDelta,
    LlmDone,
    TtsAudio,
    TtsDone,
    TurnCommit,
    VadSpeechEnd,
    VadSpeechStart,
)
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.text import spread_words
from rspp.testing.audio import tone

__all__ = ["FakeAsr", "FakeLlm", "FakeLlmStream", "FakeTts", "tick"]

_TICKS = itertools.count(1)
_TOKEN = re.compile(r"\S+\s*")
_SENTENCE = re.compile(r"^(.*?[.!?])(\s+|$)", re.S)


def tick() -> int:
    """A process-wide, strictly increasing counter: orders production against kernel decisions."""
    return next(_TICKS)


async def _work(delay_s: float, ignore_cancel: bool) -> bool:
    """Sleep ``delay_s`` as the model "computes". Returns True if a cancellation was ignored."""
    try:
        await asyncio.sleep(delay_s)
    except asyncio.CancelledError:
        if not ignore_cancel:
            raise
        return True
    return False


# --------------------------------------------------------------------------- ASR


class FakeAsrConfig(NodeConfig):
    #: The transcripts of the user's utterances, in order (the fake cannot listen).
    script: list[str] = []
    #: Speaking rate used to reveal words in partials, as speech audio arrives.
    words_per_s: Annotated[float, Meta(gt=0.0)] = 3.0
    #: Time from the end of speech to the final transcript.
    final_ms: Annotated[float, Meta(ge=0.0)] = 200.0
    #: How many trailing words of a partial are not yet stable.
    unstable_words: Annotated[int, Meta(ge=0)] = 1


class FakeAsr(Node[FakeAsrConfig]):
    """Streaming ASR stand-in: partials as speech audio arrives, a final after speech ends."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.partial", "asr.final")
    Config = FakeAsrConfig

    def __init__(self, config: FakeAsrConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.next_utterance = 0
        self._words: list[str] = []
        self._speech_ns = 0
        self._shown = 0
        self._active = False

    def on_event(self, event: Event) -> None:
        if isinstance(event, AudioIn):
            if self._active:
                self._speech_ns += event.duration_ns
                self._partial()
        elif isinstance(event, VadSpeechStart):
            script = self.config.script
            text = script[self.next_utterance] if self.next_utterance < len(script) else ""
            self.next_utterance += 1
            self._words = text.split()
            self._speech_ns = 0
            self._shown = 0
            self._active = True
        elif isinstance(event, VadSpeechEnd) and self._active:
            self._active = False
            text = " ".join(self._words)
            self.ctx.call_later(self.config.final_ms / 1000, self._final, text, event)

    def _partial(self) -> None:
        shown = min(len(self._words), int(self._speech_ns / 1e9 * self.config.words_per_s))
        if shown > self._shown:
            self._shown = shown
            stable = max(0, shown - self.config.unstable_words)
            self.emit(
                AsrPartial(
                    text=" ".join(self._words[:shown]), stable=" ".join(self._words[:stable])
                )
            )

    def _final(self, text: str, cause: Event) -> None:
        self.emit(AsrFinal(text=text), cause)

    def snapshot(self) -> Any:
        return {"next_utterance": self.next_utterance}

    def restore(self, state: Any) -> None:
        self.next_utterance = int(state["next_utterance"])


# --------------------------------------------------------------------------- LLM


class FakeLlmStream:
    """A fake provider token stream: a first-token delay, then a steady rate.

    It records its whole life -- every token produced (with a :func:`tick`), when
    it was closed, cancellations it ignored -- so tests can check that the
    runtime closed it and that it stopped costing anything.
    """

    def __init__(
        self, text: str, *, turn: int, ttft_s: float, interval_s: float, ignore_cancel: bool
    ) -> None:
        self.tokens: list[str] = _TOKEN.findall(text)
        self.turn = turn
        self.ttft_s = ttft_s
        self.interval_s = interval_s
        self.ignore_cancel = ignore_cancel
        self.produced: list[tuple[int, int]] = []  # (tick, turn)
        self.ignored_cancels = 0
        self.closed = False
        self.closed_tick = 0
        self.closed_at: float | None = None  # loop time
        self.closed_perf_ns = 0  # perf_counter_ns at close (real time, for benchmarks)

    def __aiter__(self) -> FakeLlmStream:
        return self

    async def __anext__(self) -> str:
        index = len(self.produced)
        if self.closed or index >= len(self.tokens):
            raise StopAsyncIteration
        if await _work(self.ttft_s if index == 0 else self.interval_s, self.ignore_cancel):
            self.ignored_cancels += 1
        if self.closed:  # closed by someone else while we were computing
            raise StopAsyncIteration
        self.produced.append((tick(), self.turn))
        return self.tokens[index]

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_tick = tick()
            self.closed_at = asyncio.get_running_loop().time()
            self.closed_perf_ns = time.perf_counter_ns()

    async def __aenter__(self) -> FakeLlmStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class FakeLlmConfig(NodeConfig):
    #: Time to first token.
    ttft_ms: Annotated[float, Meta(ge=0.0)] = 400.0
    #: Token rate after the first.
    tokens_per_s: Annotated[float, Meta(gt=0.0)] = 40.0
    #: Replies, one per commit this node handles, cycled (a commit that never reaches the
    #: node does not use one up); empty: a reply built from the user's words.
    replies: list[str] = []
    #: Test knob: swallow cancellation and finish the current token anyway.
    ignore_cancel: bool = False


class FakeLlm(Node[FakeLlmConfig]):
    """LLM stand-in: streams a scripted reply as ``llm.delta`` tokens, then ``llm.done``."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    Config = FakeLlmConfig

    def __init__(self, config: FakeLlmConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.replies_started = 0
        #: Every provider stream opened, in order.
        self.streams: list[FakeLlmStream] = []

    def reply_for(self, user_text: str) -> str:
        replies = self.config.replies
        if replies:
            return replies[self.replies_started % len(replies)]
        return f"You said: {user_text}. That is a fine thing to say. Tell me more about it."

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, TurnCommit)
        text = self.reply_for(event.text)
        self.replies_started += 1
        cfg = self.config
        provider = FakeLlmStream(
            text,
            turn=event.turn,
            ttft_s=cfg.ttft_ms / 1000,
            interval_s=1 / cfg.tokens_per_s,
            ignore_cancel=cfg.ignore_cancel,
        )
        self.streams.append(provider)
        async with provider:
            async for token in provider:
                yield LlmDelta(text=token)
        yield LlmDone()

    def snapshot(self) -> Any:
        return {"replies_started": self.replies_started}

    def restore(self, state: Any) -> None:
        self.replies_started = int(state["replies_started"])


# --------------------------------------------------------------------------- TTS


class FakeTtsConfig(NodeConfig):
    #: Time to first audio of each sentence.
    ttfa_ms: Annotated[float, Meta(ge=0.0)] = 150.0
    #: Real-time factor: compute time per second of audio after the first chunk.
    rtf: Annotated[float, Meta(ge=0.0)] = 0.2
    #: Spoken duration per character of text.
    ms_per_char: Annotated[float, Meta(gt=0.0)] = 60.0
    #: Size of the audio chunks produced.
    chunk_ms: Annotated[float, Meta(ge=1.0)] = 200.0
    sample_rate: Annotated[int, Meta(ge=1000, le=384_000)] = 16000
    #: Test knob: swallow cancellation and finish the current chunk anyway.
    ignore_cancel: bool = False


class FakeTts(Node[FakeTtsConfig]):
    """TTS stand-in: synthesizes each complete sentence as tone chunks carrying its words."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    produces: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")
    Config = FakeTtsConfig

    def __init__(self, config: FakeTtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._pending: dict[int, str] = {}  # turn -> text not yet synthesized
        #: Every chunk produced: (tick, turn).
        self.produced: list[tuple[int, int]] = []
        self.ignored_cancels = 0

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        for turn in [t for t in self._pending if self.ctx.is_fenced(t)]:
            del self._pending[turn]
        turn = event.turn
        if isinstance(event, LlmDelta):
            text = self._pending.get(turn, "") + event.text
            while match := _SENTENCE.match(text):
                sentence, text = match.group(0), text[match.end() :]
                async for chunk in self._synthesize(sentence, turn):
                    yield chunk
            self._pending[turn] = text
        elif isinstance(event, LlmDone):
            rest = self._pending.pop(turn, "")
            if rest.strip():
                async for chunk in self._synthesize(rest, turn):
                    yield chunk
            yield TtsDone()

    async def _synthesize(self, text: str, turn: int) -> AsyncIterator[TtsAudio]:
        cfg = self.config
        duration_ms = max(cfg.chunk_ms / 2, len(text.strip()) * cfg.ms_per_char)
        count = max(1, round(duration_ms / cfg.chunk_ms))
        chunk_ms = duration_ms / count
        for i, words in enumerate(spread_words(text, count)):
            delay = cfg.ttfa_ms / 1000 if i == 0 else chunk_ms * cfg.rtf / 1000
            if await _work(delay, cfg.ignore_cancel):
                self.ignored_cancels += 1
            self.produced.append((tick(), turn))
            yield TtsAudio(
                pcm=tone(chunk_ms, cfg.sample_rate, freq=200.0 + 20 * (turn % 5)),
                sample_rate=cfg.sample_rate,
                text=words,
            )

    def snapshot(self) -> Any:
        return {"pending": {str(k): v for k, v in self._pending.items()}}

    def restore(self, state: Any) -> None:
        self._pending = {int(k): v for k, v in state["pending"].items()}
