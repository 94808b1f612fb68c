"""WebRTC's VAD as a node: the light, classic option (a few microseconds per frame).

It classifies 10, 20 or 30 ms frames at 8, 16, 32 or 48 kHz; the node cuts the
incoming audio into ``frame_ms`` frames. ``aggressiveness`` 0-3: higher
filters out more non-speech.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from rspp.events import AudioIn, Event
from rspp.nodes.segmenter import SegmentingVad, VadNodeConfig, VadState

__all__ = ["WebrtcVad", "WebrtcVadConfig"]


class WebrtcVadConfig(VadNodeConfig):
    aggressiveness: Annotated[int, Meta(ge=0, le=3)] = 2
    frame_ms: Literal[10, 20, 30] = 20
    #: WebRTC's VAD flags ~80 ms of a new noise floor as voice while it adapts (the start of
    #: a stream, a noise that begins): a longer start window than other VADs keeps that out.
    start_ms: Annotated[float, Meta(ge=0.0)] = 100.0


class WebrtcVadState(VadState, kw_only=True):
    """The segmenter, and the audio of a frame not yet complete."""

    pending: bytes = b""
    pending_origin: int = 0


class WebrtcVad(SegmentingVad):
    """WebRTC VAD (``webrtcvad-wheels``), inline."""

    Config: ClassVar[type[WebrtcVadConfig]] = WebrtcVadConfig
    State: ClassVar[type[msgspec.Struct] | None] = WebrtcVadState

    def __init__(self, config: WebrtcVadConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        import webrtcvad

        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._pending = b""
        self._pending_origin = 0

    def on_event(self, event: Event) -> None:
        assert isinstance(event, AudioIn)
        if event.channels != 1 or event.sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError("webrtc_vad needs mono audio at 8, 16, 32 or 48 kHz")
        rate = event.sample_rate
        frame_bytes = rate * self.config.frame_ms // 1000 * 2
        frame_ns = self.config.frame_ms * 1_000_000
        if not self._pending:
            self._pending_origin = event.origin_ns
        buffer = self._pending + event.pcm
        origin = self._pending_origin
        offset = 0
        while len(buffer) - offset >= frame_bytes:
            voiced = self._vad.is_speech(buffer[offset : offset + frame_bytes], rate)
            for out in self.events_for(self.segmenter.feed(voiced, frame_ns, origin)):
                self.emit(out)
            offset += frame_bytes
            origin += frame_ns
        self._pending = buffer[offset:]
        self._pending_origin = origin

    def snapshot(self) -> Any:
        return WebrtcVadState(
            segmenter=self.segmenter.snapshot(),
            pending=self._pending,
            pending_origin=self._pending_origin,
        )

    def restore(self, state: Any) -> None:
        super().restore(state)
        self._pending = state.pending
        self._pending_origin = state.pending_origin
