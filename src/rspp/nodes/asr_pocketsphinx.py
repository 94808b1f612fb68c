"""Streaming ASR with PocketSphinx: a partial hypothesis as the audio comes, a final at the end.

Decoding runs in the model thread pool, one utterance per VAD speech segment:
``vad.speech_start`` opens it (with the pre-roll of ``rspp.nodes.utterance``),
each audio frame updates the hypothesis (an ``asr.partial`` when it changed,
its last ``unstable_words`` words not yet stable), ``vad.speech_end`` closes it
with an ``asr.final`` -- exactly one per segment, as the turn manager expects.
The node runs queued; if decoding falls behind, the oldest audio is dropped
rather than let latency build up.

Moving a session: a decoder cannot be serialized, so the State holds the
audio of the utterance in progress as it was fed, the pre-roll, the last
partial and the last event fully handled. A restored node starts a decoder
and feeds it that audio again (quietly: its partials were sent already)
before it handles anything else; the event it was in the middle of is handled
again, one it had finished is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import AsrFinal, AsrPartial, AudioIn, Event, VadSpeechEnd, VadSpeechStart
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.utterance import UtteranceAudio, UtteranceState
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.pocketsphinx import SphinxStream

__all__ = ["PocketsphinxAsr", "PocketsphinxConfig", "PocketsphinxState"]


class PocketsphinxConfig(NodeConfig):
    sample_rate: Annotated[int, Meta(ge=8000, le=16000)] = 16000
    #: Trailing words of a partial that may still change.
    unstable_words: Annotated[int, Meta(ge=0)] = 2
    #: Audio kept before the VAD's start decision and replayed into the utterance.
    preroll_ms: Annotated[float, Meta(ge=0.0)] = 600.0


class PocketsphinxState(msgspec.Struct, kw_only=True):
    utterance: UtteranceState
    #: The audio fed to the decoder in the utterance in progress, in order.
    fed: list[bytes]
    last: str
    #: The last event handled completely (a restored node does not handle it again).
    done_seq: int


class PocketsphinxAsr(Node[PocketsphinxConfig]):
    """PocketSphinx (en-US model from its wheel), streaming."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.partial", "asr.final")
    Config = PocketsphinxConfig
    State = PocketsphinxState
    resumable = True

    @classmethod
    def preload(cls, config: PocketsphinxConfig) -> None:
        SphinxStream(config.sample_rate).close()  # one decoder, left in the pool

    def __init__(self, config: PocketsphinxConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._sphinx = SphinxStream(config.sample_rate)
        self._audio = UtteranceAudio(config.preroll_ms)
        self._last = ""
        self._fed: list[bytes] = []  # the utterance's audio as fed (to rebuild a decoder)
        self._done_seq = 0
        self._rebuild = False  # restored: the decoder must be fed the utterance again

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        if self._rebuild:
            self._rebuild = False
            await run_blocking(self._replay)
        if event.seq <= self._done_seq:
            return  # handled completely before the session moved
        if isinstance(event, AudioIn):
            if self._audio.heard(event):
                partial = await self._feed(event.pcm, event.seq)
                if partial is not None:
                    yield partial
        elif isinstance(event, VadSpeechStart):
            await run_blocking(self._sphinx.start)
            replay = b"".join(f.pcm for f in self._audio.start(event.origin_ns))
            self._last, self._fed = "", []
            partial = await self._feed(replay, event.seq) if replay else None
            if partial is not None:
                yield partial
        elif isinstance(event, VadSpeechEnd) and self._audio.active:
            text = await run_blocking(self._sphinx.end)
            self._audio.end()
            self._fed, self._done_seq = [], event.seq  # done before it leaves
            yield AsrFinal(text=text)
        self._done_seq = max(self._done_seq, event.seq)

    async def _feed(self, pcm: bytes, seq: int) -> AsrPartial | None:
        text = await run_blocking(self._sphinx.feed, pcm)
        self._fed.append(pcm)
        self._done_seq = seq  # recorded before anything leaves: a move never repeats it
        if not text or text == self._last:
            return None
        self._last = text
        words = text.split()
        stable = " ".join(words[: max(0, len(words) - self.config.unstable_words)])
        return AsrPartial(text=text, stable=stable)

    def _replay(self) -> None:
        """A fresh decoder, fed the utterance in progress (blocking; its partials went out)."""
        if self._audio.active:
            self._sphinx.start()
            for pcm in self._fed:
                self._sphinx.feed(pcm)

    def snapshot(self) -> PocketsphinxState:
        return PocketsphinxState(
            utterance=self._audio.snapshot(),
            fed=list(self._fed),
            last=self._last,
            done_seq=self._done_seq,
        )

    def restore(self, state: PocketsphinxState) -> None:
        self._audio.restore(state.utterance)
        self._fed = list(state.fed)
        self._last = state.last
        self._done_seq = state.done_seq
        self._rebuild = self._audio.active

    def close(self) -> None:
        self._sphinx.close()
