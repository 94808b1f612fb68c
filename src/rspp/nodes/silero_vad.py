"""Silero VAD v6 as a node: a neural VAD that tells speech from noise, music and breath.

Each 32 ms chunk (512 samples at 16 kHz) is classified by the shared model in
the model thread pool, off the event loop; the node runs queued (audio that
arrives while it works waits in its inbox, and a backlog drops the oldest
audio rather than add latency). Hysteresis as Silero recommends: speech is
voiced above ``threshold`` and stays voiced until the probability falls below
``threshold - 0.15``.

Moving a session: the State holds the segmenter and the model's recurrent
state as they were *before* the audio the node was in the middle of, with how
many events that audio had produced; handed it again after a restore, the
node runs the (deterministic) model over it from there and sends only what it
had not sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import AudioIn, Event
from rspp.nodes.segmenter import SegmentingVad, VadNodeConfig, VadState
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.silero import SileroStream, silero_session

__all__ = ["SileroVad", "SileroVadConfig", "SileroVadState"]


class SileroVadConfig(VadNodeConfig):
    #: Speech probability at or above which a chunk is voiced.
    threshold: Annotated[float, Meta(gt=0.0, lt=1.0)] = 0.5


class SileroVadState(VadState, kw_only=True):
    """The segmenter and the model's stream state, before the event in flight (if any)."""

    rate: int = 0
    model: tuple[bytes, bytes, bytes] | None = None
    seq: int = 0
    emitted: int = 0


class SileroVad(SegmentingVad):
    """Neural VAD (Silero v6, onnxruntime); 8 or 16 kHz input."""

    Config: ClassVar[type[SileroVadConfig]] = SileroVadConfig
    State: ClassVar[type[msgspec.Struct] | None] = SileroVadState
    resumable = True

    def __init__(self, config: SileroVadConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        silero_session()  # load (once per process) when the session starts, not mid-call
        self._stream: SileroStream | None = None
        self._before: SileroVadState | None = None  # the state before the event in flight
        self._skip = 0  # events the resumed one had produced before the move

    @classmethod
    def preload(cls, config: Any) -> None:
        silero_session()

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, AudioIn)
        if self._stream is None or self._stream.sample_rate != event.sample_rate:
            self._stream = SileroStream(event.sample_rate)
        stream = self._stream
        before = self._before
        if before is not None and before.seq == event.seq:
            skip, before.emitted = before.emitted, 0  # resumed: send only what was not sent
        else:
            skip = 0
            before = self._before = SileroVadState(
                segmenter=self.segmenter.snapshot(),
                rate=event.sample_rate,
                model=stream.state(),
                seq=event.seq,
            )
        pending_before = stream.pending  # samples of earlier audio in the first chunk
        probabilities = await run_blocking(stream.push, event.pcm)
        chunk_ns = stream.chunk * 1_000_000_000 // event.sample_rate
        sample_ns = 1e9 / event.sample_rate
        threshold = self.config.threshold
        for i, p in enumerate(probabilities):
            voiced = p >= (threshold - 0.15 if self.speaking else threshold)
            origin = event.origin_ns + int((i * stream.chunk - pending_before) * sample_ns)
            for out in self.events_for(self.segmenter.feed(voiced, chunk_ns, origin)):
                if skip:
                    skip -= 1
                    before.emitted += 1
                    continue
                before.emitted += 1  # counted before it leaves: a move never repeats it
                yield out
        self._before = None

    def snapshot(self) -> Any:
        if self._before is not None:
            return msgspec.structs.replace(self._before)
        stream = self._stream
        return SileroVadState(
            segmenter=self.segmenter.snapshot(),
            rate=stream.sample_rate if stream is not None else 0,
            model=stream.state() if stream is not None else None,
        )

    def restore(self, state: Any) -> None:
        assert isinstance(state, SileroVadState)
        self.segmenter.restore(state.segmenter)
        if state.model is not None and state.rate:
            self._stream = SileroStream(state.rate)
            self._stream.load(state.model)
        self._before = state if state.seq else None
