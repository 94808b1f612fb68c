"""The audio of the utterance in progress, for ASR nodes.

Audio reaches an ASR node straight from the ingress, while the VAD's
``vad.speech_start`` comes after it has heard ``start_ms`` of voice (and after
its own queue). So the node keeps a short *pre-roll* of recent audio, and when
speech starts it replays the part from just before the speech's origin time:
the first syllable is not lost. :class:`SegmentAudio` builds on it for ASRs
that transcribe each speech segment whole.
"""

from __future__ import annotations

from collections import deque

import msgspec

from rspp.events import AudioIn, Event, VadSpeechEnd, VadSpeechStart

__all__ = ["SegmentAudio", "SegmentState", "UtteranceAudio", "UtteranceState"]


class UtteranceState(msgspec.Struct, kw_only=True):
    """The pre-roll ring and whether an utterance is in progress, for a snapshot."""

    ring: list[AudioIn]
    active: bool


class SegmentState(msgspec.Struct, kw_only=True):
    """The audio of the segment in progress too."""

    utterance: UtteranceState
    frames: list[bytes]
    rate: int


class UtteranceAudio:
    """Pre-roll ring and the audio of the current utterance. Pure bookkeeping."""

    __slots__ = ("_ring", "_ring_ns", "active", "margin_ns", "preroll_ns")

    def __init__(self, preroll_ms: float = 600.0, margin_ms: float = 120.0) -> None:
        self.preroll_ns = int(preroll_ms * 1e6)
        self.margin_ns = int(margin_ms * 1e6)
        self._ring: deque[AudioIn] = deque()
        self._ring_ns = 0
        self.active = False

    def heard(self, frame: AudioIn) -> bool:
        """A frame arrived; True if it belongs to the utterance in progress (else kept aside)."""
        if self.active:
            return True
        self._ring.append(frame)
        self._ring_ns += frame.duration_ns
        while self._ring and self._ring_ns - self._ring[0].duration_ns >= self.preroll_ns:
            self._ring_ns -= self._ring.popleft().duration_ns
        return False

    def start(self, speech_origin_ns: int) -> list[AudioIn]:
        """Speech started at ``speech_origin_ns``: the kept frames from just before it."""
        self.active = True
        since = speech_origin_ns - self.margin_ns
        frames = [f for f in self._ring if f.origin_ns + f.duration_ns > since]
        self._ring.clear()
        self._ring_ns = 0
        return frames

    def end(self) -> None:
        self.active = False

    def snapshot(self) -> UtteranceState:
        return UtteranceState(ring=list(self._ring), active=self.active)

    def restore(self, state: UtteranceState) -> None:
        self._ring = deque(state.ring)
        self._ring_ns = sum(f.duration_ns for f in self._ring)
        self.active = state.active


class SegmentAudio:
    """The PCM16 of each VAD speech segment, pre-roll included, for ASRs that are not streaming.

    The oldest audio of a segment longer than ``max_s`` is dropped, so memory
    stays bounded. ``rate`` is the sample rate of the audio heard last.
    """

    __slots__ = ("_bytes", "_frames", "_utterance", "max_s", "rate")

    def __init__(self, preroll_ms: float, max_s: float) -> None:
        self._utterance = UtteranceAudio(preroll_ms)
        self.max_s = max_s
        self.rate = 16000
        self._frames: list[bytes] = []
        self._bytes = 0

    def feed(self, event: Event) -> bytes | None:
        """Take an audio frame or a VAD event; at a segment's end, return its audio."""
        if isinstance(event, AudioIn):
            self.rate = event.sample_rate
            if self._utterance.heard(event):
                self._keep(event.pcm)
        elif isinstance(event, VadSpeechStart):
            self._frames, self._bytes = [], 0
            for frame in self._utterance.start(event.origin_ns):
                self._keep(frame.pcm)
        elif isinstance(event, VadSpeechEnd) and self._utterance.active:
            self._utterance.end()
            pcm, self._frames, self._bytes = b"".join(self._frames), [], 0
            return pcm
        return None

    def snapshot(self) -> SegmentState:
        return SegmentState(
            utterance=self._utterance.snapshot(), frames=list(self._frames), rate=self.rate
        )

    def restore(self, state: SegmentState) -> None:
        self._utterance.restore(state.utterance)
        self._frames = list(state.frames)
        self._bytes = sum(len(f) for f in self._frames)
        self.rate = state.rate

    def _keep(self, pcm: bytes) -> None:
        self._frames.append(pcm)
        self._bytes += len(pcm)
        limit = int(self.max_s * self.rate) * 2
        while self._bytes > limit and len(self._frames) > 1:
            self._bytes -= len(self._frames.pop(0))
