"""Audio format conversion at the edge: a transport speaks its client's format.

The session sees only its pipeline's rate; each transport converts on the
way in and out with a streaming resampler (soxr keeps the filter state
between chunks, so 20 ms frames join without clicks).
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

    def reset(self) -> None:
        """Forget the filter state (a cleared reply: the next one does not get its tail)."""
        if self.in_rate == self.out_rate:
            self._stream = None
        else:
            self._stream = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="int16", quality="HQ"
            )
