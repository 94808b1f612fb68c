"""Streaming ASR with PocketSphinx: a partial hypothesis as the audio comes, a final at the end.

Decoding runs in the model thread pool, one utterance per VAD speech segment:
``vad.speech_start`` opens it (with the pre-roll of ``rspp.nodes.utterance``),
each audio frame updates the hypothesis (an ``asr.partial`` when it changed,
its last ``unstable_words`` words not yet stable), ``vad.speech_end`` closes it
with an ``asr.final`` -- exactly one per segment, as the turn manager expects.
The node runs queued; if decoding falls behind, the oldest audio is dropped
rather than let latency build up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import AsrFinal, AsrPartial, AudioIn, Event, VadSpeechEnd, VadSpeechStart
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.utterance import UtteranceAudio
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.pocketsphinx import SphinxStream

__all__ = ["PocketsphinxAsr", "PocketsphinxConfig"]


class PocketsphinxConfig(NodeConfig):
    sample_rate: Annotated[int, Meta(ge=8000, le=16000)] = 16000
    #: Trailing words of a partial that may still change.
    unstable_words: Annotated[int, Meta(ge=0)] = 2
    #: Audio kept before the VAD's start decision and replayed into the utterance.
    preroll_ms: Annotated[float, Meta(ge=0.0)] = 600.0


class PocketsphinxAsr(Node[PocketsphinxConfig]):
    """PocketSphinx (en-US model from its wheel), streaming."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.partial", "asr.final")
    Config = PocketsphinxConfig

    @classmethod
    def preload(cls, config: PocketsphinxConfig) -> None:
        SphinxStream(config.sample_rate).close()  # one decoder, left in the pool

    def __init__(self, config: PocketsphinxConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._sphinx = SphinxStream(config.sample_rate)
        self._audio = UtteranceAudio(config.preroll_ms)
        self._last = ""

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        if isinstance(event, AudioIn):
            if self._audio.heard(event):
                partial = await self._feed(event.pcm)
                if partial is not None:
                    yield partial
        elif isinstance(event, VadSpeechStart):
            await run_blocking(self._sphinx.start)
            self._last = ""
            replay = b"".join(f.pcm for f in self._audio.start(event.origin_ns))
            if replay:
                partial = await self._feed(replay)
                if partial is not None:
                    yield partial
        elif isinstance(event, VadSpeechEnd) and self._audio.active:
            self._audio.end()
            yield AsrFinal(text=await run_blocking(self._sphinx.end))

    async def _feed(self, pcm: bytes) -> AsrPartial | None:
        text = await run_blocking(self._sphinx.feed, pcm)
        if not text or text == self._last:
            return None
        self._last = text
        words = text.split()
        stable = " ".join(words[: max(0, len(words) - self.config.unstable_words)])
        return AsrPartial(text=text, stable=stable)

    def close(self) -> None:
        self._sphinx.close()
