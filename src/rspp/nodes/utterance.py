"""The audio of the utterance in progress, for ASR nodes.

Audio reaches an ASR node straight from the ingress, while the VAD's
``vad.speech_start`` comes after it has heard ``start_ms`` of voice (and after
its own queue). So the node keeps a short *pre-roll* of recent audio, and when
speech starts it replays the part from just before the speech's origin time:
the first syllable is not lost.
"""

from __future__ import annotations

from collections import deque

from rspp.events import AudioIn

__all__ = ["UtteranceAudio"]


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
