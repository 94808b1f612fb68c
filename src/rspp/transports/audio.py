"""Audio format conversion at the edge: a transport speaks its client's format.

The session sees only its pipeline's rate; each transport converts on the
way in and out with a streaming resampler (soxr keeps the filter state
between chunks, so 20 ms frames join without clicks).

Quality is a latency trade, measured with 20 ms chunks (python-soxr 1.1,
audio held back by the stream, 48 <-> 16 and 24 <-> 16 kHz): ``HQ`` 33 ms,
``MQ`` 9 ms (released in 40 ms blocks), ``LQ`` 6-19 ms and drifting, ``QQ``
none but no anti-alias filter. Every millisecond held here is added to the
caller's voice-to-voice time, twice, so this uses ``MQ``: a 16-bit linear-phase
filter, plenty for speech, 9 ms. Clients that can send and play the
pipeline's own rate (the browser page asks its AudioContext for it) skip
resampling altogether. Telephony (8 kHz) has its own resampler
(:mod:`rspp.transports.twilio.audio`): soxr holds 50-90 ms there.
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["Resampler"]


class Resampler:
    """Streaming PCM16 mono resampling, ``in_rate`` -> ``out_rate`` (a no-op when equal)."""

    __slots__ = ("_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream: soxr.ResampleStream | None = None
        self.reset()

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk (the output may be a few samples shorter or longer)."""
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """What the filter still holds (the end of a stream), then start afresh."""
        if self._stream is None:
            return b""
        tail: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        self.reset()
        return tail.astype("<i2", copy=False).tobytes()

    def reset(self) -> None:
        """Forget the filter state (a cleared reply: the next one does not get its tail)."""
        if self.in_rate == self.out_rate:
            self._stream = None
        else:
            self._stream = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="int16", quality="MQ"
            )
