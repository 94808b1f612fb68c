"""Silero VAD v6 as a node: a neural VAD that tells speech from noise, music and breath.

Each 32 ms chunk (512 samples at 16 kHz) is classified by the shared model in
the model thread pool, off the event loop; the node runs queued (audio that
arrives while it works waits in its inbox, and a backlog drops the oldest
audio rather than add latency). Hysteresis as Silero recommends: speech is
voiced above ``threshold`` and stays voiced until the probability falls below
``threshold - 0.15``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import AudioIn, Event
from rspp.nodes.segmenter import SegmentingVad, VadNodeConfig
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.silero import SileroStream, silero_session

__all__ = ["SileroVad", "SileroVadConfig"]


class SileroVadConfig(VadNodeConfig):
    #: Speech probability at or above which a chunk is voiced.
    threshold: Annotated[float, Meta(gt=0.0, lt=1.0)] = 0.5


class SileroVad(SegmentingVad):
    """Neural VAD (Silero v6, onnxruntime); 8 or 16 kHz input."""

    Config: ClassVar[type[SileroVadConfig]] = SileroVadConfig

    def __init__(self, config: SileroVadConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        silero_session()  # load (once per process) when the session starts, not mid-call
        self._stream: SileroStream | None = None

    @classmethod
    def preload(cls, config: Any) -> None:
        silero_session()

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, AudioIn)
        if self._stream is None or self._stream.sample_rate != event.sample_rate:
            self._stream = SileroStream(event.sample_rate)
        stream = self._stream
        pending_before = stream.pending  # samples of earlier audio in the first chunk
        probabilities = await run_blocking(stream.push, event.pcm)
        chunk_ns = stream.chunk * 1_000_000_000 // event.sample_rate
        sample_ns = 1e9 / event.sample_rate
        threshold = self.config.threshold
        for i, p in enumerate(probabilities):
            voiced = p >= (threshold - 0.15 if self.speaking else threshold)
            origin = event.origin_ns + int((i * stream.chunk - pending_before) * sample_ns)
            for out in self.events_for(self.segmenter.feed(voiced, chunk_ns, origin)):
                yield out
