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
import math
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    Event,
    LlmDelta,
    LlmDone,
    TtsAudio,
    TurnCommit,
    TurnSpeculate,
    VadSpeechEnd,
    VadSpeechStart,
)
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.text import spread_words
from rspp.nodes.tts_base import ChunkedTts, TtsConfig, TtsState
from rspp.testing.audio import tone

__all__ = [
    "FakeAsr",
    "FakeLlm",
    "FakeLlmStream",
    "FakeTts",
    "ScriptLine",
    "draw",
    "normalize",
    "tick",
]

_TICKS = itertools.count(1)
_TOKEN = re.compile(r"\S+\s*")


def tick() -> int:
    """A process-wide, strictly increasing counter: orders production against kernel decisions."""
    return next(_TICKS)


#: A latency or rate: a fixed value, or ``[low, high]`` drawn uniformly per request.
Profile = float | tuple[float, float]


def draw(profile: Profile, seed: int, key: str) -> float:
    """A value of ``profile`` for the request ``key``.

    Deterministic: the same seed and key always give the same value, so the same
    request costs the same in every run and every mode of a benchmark.
    """
    if isinstance(profile, (int, float)):
        return float(profile)
    low, high = profile
    return random.Random(f"{seed}:{key}").uniform(low, high)


def _check_profile(name: str, profile: Profile, low: float) -> None:
    first, last = (profile, profile) if isinstance(profile, (int, float)) else profile
    if first < low or last < first:
        raise ValueError(f"{name}: must be >= {low} (a range must be [low, high])")


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


class ScriptLine(NodeConfig):
    """One utterance: its final transcript, and what partials show before it (if different)."""

    text: str
    #: What the recogniser believes while the user speaks (a hypothesis that changes late).
    partial: str | None = None


class FakeAsrConfig(NodeConfig):
    #: The transcripts of the user's speech segments, in order (the fake cannot listen).
    script: list[str | ScriptLine] = []
    #: Speaking rate used to reveal words in partials, as speech audio arrives.
    words_per_s: Annotated[float, Meta(gt=0.0)] = 3.0
    #: Time from the end of speech to the final transcript (ms, or a [low, high] range).
    final_ms: Profile = 200.0
    #: How many trailing words of a partial are not yet stable.
    unstable_words: Annotated[int, Meta(ge=0)] = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_profile("final_ms", self.final_ms, 0.0)


class PendingFinal(msgspec.Struct, array_like=True):
    """A final transcript due at ``due_ns`` (session time), for the turn and origin of its cause."""

    due_ns: int
    text: str
    turn: int
    origin_ns: int


class FakeAsrState(msgspec.Struct, kw_only=True):
    next_utterance: int
    final_text: str
    words: list[str]
    speech_ns: int
    shown: int
    active: bool
    finals: list[PendingFinal]


class FakeAsr(Node[FakeAsrConfig]):
    """Streaming ASR stand-in: partials as speech audio arrives, a final after speech ends."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.partial", "asr.final")
    Config = FakeAsrConfig
    State = FakeAsrState

    def __init__(self, config: FakeAsrConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.next_utterance = 0
        self._final_text = ""
        self._words: list[str] = []
        self._speech_ns = 0
        self._shown = 0
        self._active = False
        self._finals: list[PendingFinal] = []  # due, in order

    def on_event(self, event: Event) -> None:
        if isinstance(event, AudioIn):
            if self._active:
                self._speech_ns += event.duration_ns
                self._partial()
        elif isinstance(event, VadSpeechStart):
            script = self.config.script
            line = script[self.next_utterance] if self.next_utterance < len(script) else ""
            self.next_utterance += 1
            if isinstance(line, str):
                line = ScriptLine(text=line)
            self._final_text = " ".join(line.text.split())
            self._words = (line.partial if line.partial is not None else line.text).split()
            self._speech_ns = 0
            self._shown = 0
            self._active = True
        elif isinstance(event, VadSpeechEnd) and self._active:
            self._active = False
            text = self._final_text
            cfg = self.config
            delay_ns = round(draw(cfg.final_ms, cfg.seed, text) * 1e6)
            final = PendingFinal(self.ctx.now_ns() + delay_ns, text, event.turn, event.origin_ns)
            self._finals.append(final)
            self.ctx.call_at(final.due_ns, self._final, final)

    def _partial(self) -> None:
        shown = min(len(self._words), math.ceil(self._speech_ns / 1e9 * self.config.words_per_s))
        if shown > self._shown:
            self._shown = shown
            stable = max(0, shown - self.config.unstable_words)
            self.emit(
                AsrPartial(
                    text=" ".join(self._words[:shown]), stable=" ".join(self._words[:stable])
                )
            )

    def _final(self, final: PendingFinal) -> None:
        if final in self._finals:
            self._finals.remove(final)
        self.emit(AsrFinal(text=final.text, turn=final.turn, origin_ns=final.origin_ns))

    def snapshot(self) -> FakeAsrState:
        return FakeAsrState(
            next_utterance=self.next_utterance,
            final_text=self._final_text,
            words=list(self._words),
            speech_ns=self._speech_ns,
            shown=self._shown,
            active=self._active,
            finals=list(self._finals),
        )

    def restore(self, state: FakeAsrState) -> None:
        self.next_utterance = state.next_utterance
        self._final_text = state.final_text
        self._words = list(state.words)
        self._speech_ns = state.speech_ns
        self._shown = state.shown
        self._active = state.active
        self._finals = list(state.finals)
        for final in self._finals:  # the deadlines are in session time: re-arm them
            self.ctx.call_at(final.due_ns, self._final, final)


# --------------------------------------------------------------------------- LLM


class FakeLlmStream:
    """A fake provider token stream: a first-token delay, then a steady rate.

    It records its whole life -- every token produced (with a :func:`tick`), when
    it was closed, cancellations it ignored -- so tests can check that the
    runtime closed it and that it stopped costing anything.
    """

    def __init__(
        self,
        text: str,
        *,
        turn: int,
        ttft_s: float,
        interval_s: float,
        ignore_cancel: bool,
        start: int = 0,
        first_s: float | None = None,
    ) -> None:
        self.tokens: list[str] = _TOKEN.findall(text)
        self.turn = turn
        #: The first token to produce (a resumed request skips what was produced before).
        self.start = start
        #: The delay before the first token produced (default: ``ttft_s``).
        self.first_s = ttft_s if first_s is None else first_s
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
        index = self.start + len(self.produced)
        if self.closed or index >= len(self.tokens):
            raise StopAsyncIteration
        if await _work(self.first_s if not self.produced else self.interval_s, self.ignore_cancel):
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
    #: Time to first token (ms, or a [low, high] range drawn per request).
    ttft_ms: Profile = 400.0
    #: Token rate after the first (tokens/s, or a range).
    tokens_per_s: Profile = 40.0
    #: The replies. A list is used in turn, one per request (cycled); a mapping answers
    #: by the user's words (compared case- and punctuation-blind). Anything else, or an
    #: empty list: a reply built from the user's words.
    replies: list[str] | dict[str, str] = []
    #: Test knob: swallow cancellation and finish the current token anyway.
    ignore_cancel: bool = False
    #: After a move, the first-token delay of the continuation request (ms, or a range);
    #: None: the stream goes on at the pace it had, as if the provider had kept streaming
    #: (a restored call is then indistinguishable from one that never moved).
    resume_ms: Profile | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_profile("ttft_ms", self.ttft_ms, 0.0)
        _check_profile("tokens_per_s", self.tokens_per_s, 1e-3)
        if self.resume_ms is not None:
            _check_profile("resume_ms", self.resume_ms, 0.0)


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: how transcripts are compared."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


class LlmWork(msgspec.Struct, kw_only=True):
    """A request in progress: the reply chosen, how many tokens went out, and the end."""

    seq: int
    turn: int
    text: str
    emitted: int = 0
    ended: bool = False
    #: When the next token is due (session time).
    next_ns: int = 0


class FakeLlmState(msgspec.Struct, kw_only=True):
    replies_started: int
    work: LlmWork | None = None


class FakeLlm(Node[FakeLlmConfig]):
    """LLM stand-in: streams a scripted reply as ``llm.delta`` tokens, then ``llm.done``.

    It answers reply roots, committed or speculative, and records the prompt it
    was given (the session's conversation history plus the user's words), so tests
    can check what context a model would have seen. It is resumable: after a
    move it continues the reply from the next token (after the first-token delay
    of a new request, as a real provider would).
    """

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    accepts: ClassVar[tuple[str, ...]] = ("turn.speculate",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    Config = FakeLlmConfig
    State = FakeLlmState
    resumable = True

    def __init__(self, config: FakeLlmConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.replies_started = 0
        #: Every provider stream opened, in order.
        self.streams: list[FakeLlmStream] = []
        #: The prompt of every request: (turn, [(role, text), ...] history + the user's text).
        self.prompts: list[tuple[int, list[tuple[str, str]]]] = []
        replies = config.replies
        self._by_text = (
            {normalize(k): v for k, v in replies.items()} if isinstance(replies, dict) else {}
        )
        self._work: LlmWork | None = None
        self._resumed = False

    def reply_for(self, user_text: str) -> str:
        replies = self.config.replies
        if isinstance(replies, list) and replies:
            return replies[self.replies_started % len(replies)]
        known = self._by_text.get(normalize(user_text))
        if known is not None:
            return known
        return f"You said: {user_text}. That is a fine thing to say. Tell me more about it."

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, (TurnCommit, TurnSpeculate))
        work = self._work
        if work is None or work.seq != event.seq:
            self._resumed = False  # what was in flight is not what we are asked now
            history = [(m.role, m.text) for m in self.ctx.conversation.history(before=event.turn)]
            self.prompts.append((event.turn, [*history, ("user", event.text)]))
            work = self._work = LlmWork(
                seq=event.seq, turn=event.turn, text=self.reply_for(event.text)
            )
            self.replies_started += 1
        cfg = self.config
        ttft_s = draw(cfg.ttft_ms, cfg.seed, event.text) / 1000
        interval_s = 1 / draw(cfg.tokens_per_s, cfg.seed + 1, event.text)
        now = self.ctx.now_ns()
        first_s = ttft_s
        if self._resumed:  # continuing a request that was in flight when the session moved
            self._resumed = False
            if cfg.resume_ms is not None:
                first_s = draw(cfg.resume_ms, cfg.seed + 2, event.text) / 1000
            else:
                first_s = max(0, work.next_ns - now) / 1e9
        work.next_ns = now + round(first_s * 1e9)
        provider = FakeLlmStream(
            work.text,
            turn=event.turn,
            ttft_s=ttft_s,
            interval_s=interval_s,
            ignore_cancel=cfg.ignore_cancel,
            start=work.emitted,
            first_s=first_s,
        )
        self.streams.append(provider)
        async with provider:
            async for token in provider:
                work.emitted += 1  # counted before it leaves: a snapshot never repeats it
                work.next_ns = self.ctx.now_ns() + round(interval_s * 1e9)
                yield LlmDelta(text=token)
        if not work.ended:
            work.ended = True
            yield LlmDone()
        self._work = None

    def snapshot(self) -> FakeLlmState:
        work = self._work
        if work is not None and self.ctx.is_fenced(work.turn):
            work = None  # a reply that is over: nothing to continue
        return FakeLlmState(
            replies_started=self.replies_started,
            work=None if work is None else msgspec.structs.replace(work),
        )

    def restore(self, state: FakeLlmState) -> None:
        self.replies_started = state.replies_started
        self._work = state.work
        self._resumed = state.work is not None


# --------------------------------------------------------------------------- TTS


class FakeTtsConfig(TtsConfig):
    #: Time to first audio of each piece of text (ms, or a [low, high] range per piece).
    ttfa_ms: Profile = 150.0
    #: Real-time factor: compute time per second of audio after the first chunk (or a range).
    rtf: Profile = 0.2
    #: Spoken duration per character of text.
    ms_per_char: Annotated[float, Meta(gt=0.0)] = 60.0
    #: Stream audio as it is synthesized; False: a piece's audio comes out when all of it is done.
    stream_audio: bool = True
    #: Test knob: swallow cancellation and finish the current chunk anyway.
    ignore_cancel: bool = False
    #: After a move, the delay before the first chunk of the piece it was synthesizing
    #: (ms, or a range); None: it goes on at the pace it had.
    resume_ms: Profile | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_profile("ttfa_ms", self.ttfa_ms, 0.0)
        _check_profile("rtf", self.rtf, 0.0)
        if self.resume_ms is not None:
            _check_profile("resume_ms", self.resume_ms, 0.0)


class FakeTtsState(TtsState, kw_only=True):
    """The TTS base's state, and when the next chunk of the piece in progress is due."""

    next_ns: int = 0


class FakeTts(ChunkedTts):
    """TTS stand-in: synthesizes each piece of text as tone chunks carrying its words.

    The text stream of each reply goes through a :class:`~rspp.nodes.chunker.TextChunker`:
    with ``sentence`` chunking the first audio can leave before the LLM is done.
    """

    Config = FakeTtsConfig
    State = FakeTtsState

    def __init__(self, config: FakeTtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._next_ns = 0  # when the next chunk of the piece in progress is due
        self._resumed = False
        self._resumed_seq = 0
        #: Every chunk produced: (tick, turn).
        self.produced: list[tuple[int, int]] = []
        #: Every piece of text synthesized: (turn, text).
        self.pieces: list[tuple[int, str]] = []
        self.ignored_cancels = 0

    async def synthesize(self, text: str, turn: int, skip: int = 0) -> AsyncIterator[TtsAudio]:
        cfg = self.config
        if not skip:
            self.pieces.append((turn, text))
        duration_ms = max(cfg.chunk_ms / 2, len(text.strip()) * cfg.ms_per_char)
        count = max(1, round(duration_ms / cfg.chunk_ms))
        chunk_ms = duration_ms / count
        ttfa_s = draw(cfg.ttfa_ms, cfg.seed, text) / 1000
        rtf = draw(cfg.rtf, cfg.seed + 1, text)
        chunks = []
        resumed, self._resumed = self._resumed, False
        resumed = resumed and self._work is not None and self._work.seq == self._resumed_seq
        for i, words in enumerate(spread_words(text, count)):
            if i < skip:
                continue  # sent before the session moved
            delay = ttfa_s if i == 0 else chunk_ms * rtf / 1000
            if resumed:  # the piece that was in progress when the session moved
                resumed = False
                if cfg.resume_ms is not None:
                    delay = draw(cfg.resume_ms, cfg.seed + 2, text) / 1000
                else:
                    delay = max(0, self._next_ns - self.ctx.now_ns()) / 1e9
            self._next_ns = self.ctx.now_ns() + round(delay * 1e9)
            if await _work(delay, cfg.ignore_cancel):
                self.ignored_cancels += 1
            self.produced.append((tick(), turn))
            chunk = TtsAudio(
                pcm=tone(chunk_ms, cfg.sample_rate, freq=200.0 + 20 * (turn % 5)),
                sample_rate=cfg.sample_rate,
                text=words,
            )
            if cfg.stream_audio:
                yield chunk
            else:
                chunks.append(chunk)
        for chunk in chunks:
            yield chunk

    def snapshot(self) -> FakeTtsState:
        base = super().snapshot()
        return FakeTtsState(
            pending=base.pending, started=base.started, work=base.work, next_ns=self._next_ns
        )

    def restore(self, state: TtsState) -> None:
        assert isinstance(state, FakeTtsState)
        super().restore(state)
        self._next_ns = state.next_ns
        self._resumed = state.work is not None
        self._resumed_seq = state.work.seq if state.work is not None else 0
