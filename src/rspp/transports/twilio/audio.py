"""Telephone audio: G.711 μ-law at 8 kHz on Twilio's side, PCM16 at the pipeline's rate on ours.

* :func:`ulaw_to_pcm16` / :func:`pcm16_to_ulaw` -- G.711 μ-law, bit-exact with
  the classic Sun reference (the stdlib's ``audioop``, gone in Python 3.13), by
  table look-up in numpy: no dependency that a Python version can lose.
* :class:`Resampler` -- a streaming polyphase low-pass resampler for PCM16
  mono. Why not ``soxr.ResampleStream``: libsoxr works in blocks; between
  16 kHz and 8 kHz it holds back up to ~115 ms and releases audio in ~100 ms
  bursts (its low-latency "VR" mode is misaligned by a fraction of a sample,
  its "QQ" quality does not low-pass at all). On a phone call that is 115 ms
  added to each direction. This one holds back half its filter (about 3 ms),
  keeps the filter's history across chunks (so chunk boundaries cannot click:
  any chunking gives the same samples), and trims its delay, so output sample
  ``n`` is input time ``n / rate_out`` exactly -- which is what lets the
  endpoint count heard audio in 8 kHz samples.
* :class:`Inbound` / :class:`Outbound` -- the two directions of a call: μ-law
  payloads to pipeline PCM, and pipeline PCM to 20 ms μ-law frames (160 bytes),
  the last one padded with silence when a reply ends.

Pure computation: no I/O, no clock.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "FRAME_BYTES",
    "TWILIO_RATE",
    "Inbound",
    "Outbound",
    "Resampler",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
]

#: Twilio Media Streams audio: μ-law, 8000 Hz, mono.
TWILIO_RATE: Final = 8000
#: One 20 ms frame of μ-law at 8 kHz.
FRAME_BYTES: Final = 160
#: μ-law silence (the code of 0).
ULAW_SILENCE: Final = 0xFF

# --------------------------------------------------------------------------- G.711 μ-law

_BIAS = 0x84  # decoding, in 16-bit units
_CLIP = 8159  # encoding, in 14-bit units (the reference's)
_BIAS14 = 0x21


def _decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _encode_table() -> npt.NDArray[np.uint8]:
    # Every int16 value, indexed by its bit pattern (uint16), as in the Sun reference: the
    # top 14 bits, magnitude clipped and biased, the segment (the top bit's position), four
    # mantissa bits, then inverted (the sign bit set for positive values).
    samples = np.arange(65536, dtype=np.int32)
    samples = np.where(samples >= 32768, samples - 65536, samples) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS14
    segment = np.floor(np.log2(magnitude)).astype(np.int32) - 5
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


_ULAW_TO_PCM: Final = _decode_table()
_PCM_TO_ULAW: Final = _encode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 μ-law bytes to PCM16 little-endian (one sample per byte)."""
    codes = np.frombuffer(data, dtype=np.uint8)
    return _ULAW_TO_PCM[codes].astype("<i2").tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """PCM16 little-endian to G.711 μ-law (a trailing odd byte is ignored)."""
    samples = np.frombuffer(pcm, dtype="<u2", count=len(pcm) // 2)
    return bytes(_PCM_TO_ULAW[samples].tobytes())


# --------------------------------------------------------------------------- resampling

#: Stop-band attenuation of the low-pass (dB) and its transition band, as a share of
#: the lower Nyquist frequency: at 8 kHz the pass band ends at 3.4 kHz and 4 kHz is
#: attenuated by 65 dB, which covers the telephone band.
_ATTENUATION_DB: Final = 65.0
_TRANSITION: Final = 0.15


@cache
def _polyphase(up: int, down: int) -> tuple[npt.NDArray[np.float64], int, int]:
    """The Kaiser-windowed sinc low-pass for ``up/down``, split into ``up`` phases.

    Returns (table[phase, tap], taps per phase, the filter's centre in
    upsampled samples).
    """
    # In units of gcd(rate_in, rate_out): rate_in = down, rate_out = up, zero-stuffed at up*down.
    fs = up * down
    nyquist = min(up, down) / 2
    width = _TRANSITION * nyquist
    cutoff = nyquist - width / 2
    beta = 0.1102 * (_ATTENUATION_DB - 8.7)
    taps = math.ceil((_ATTENUATION_DB - 7.95) / (2.285 * 2 * math.pi * width / fs)) + 1
    taps += 1 - taps % 2  # odd: an integer centre
    centre = (taps - 1) // 2
    n = np.arange(taps) - centre
    h = 2 * cutoff / fs * np.sinc(2 * cutoff / fs * n) * np.kaiser(taps, beta)
    h *= up / h.sum()  # unit gain at DC after zero-stuffing by `up`
    per_phase = math.ceil(taps / up)
    padded = np.zeros(per_phase * up)
    padded[:taps] = h
    # table[p, k] = h[p + k * up]: the taps that meet input sample i - k at phase p.
    return padded.reshape(per_phase, up).T.copy(), per_phase, centre


class Resampler:
    """Streaming resampling of PCM16 mono between two rates (see the module docstring)."""

    __slots__ = ("_base", "_centre", "_down", "_history", "_in", "_out", "_table", "_taps", "_up")

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError("sample rates must be positive")
        g = math.gcd(rate_in, rate_out)
        self._up, self._down = rate_out // g, rate_in // g
        self._table, self._taps, self._centre = _polyphase(self._up, self._down)
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new stream starts)."""
        #: Input samples kept for the filter; ``_base`` is the global index of the first.
        self._history = np.zeros(self._taps - 1)
        self._base = -(self._taps - 1)
        self._in = 0  # input samples taken
        self._out = 0  # output samples given

    @property
    def identity(self) -> bool:
        return self._up == self._down

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Resample one chunk; ``last`` flushes the stream's tail (then it starts afresh)."""
        if self.identity:
            return pcm[: len(pcm) // 2 * 2]
        x = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
        self._in += len(x)
        self._history = np.concatenate((self._history, x))
        if last:
            expected = self._in * self._up // self._down
            self._history = np.concatenate((self._history, np.zeros(self._taps + self._centre)))
            out = self._emit(limit=expected)
            self.reset()
            return out
        return self._emit()

    def _emit(self, limit: int | None = None) -> bytes:
        up, down, centre = self._up, self._down, self._centre
        have = self._base + len(self._history)  # global index one past the last input
        # Output n sits at upsampled position n*down + centre (the filter's delay trimmed);
        # it needs input up to index (n*down + centre) // up.
        end = (have * up - 1 - centre) // down + 1
        if limit is not None:
            end = min(end, limit)
        start = self._out
        if end <= start:
            return b""
        position = np.arange(start, end, dtype=np.int64) * down + centre
        newest = position // up
        phase = position - newest * up
        index = (newest - self._base)[:, None] - np.arange(self._taps)[None, :]
        y = np.einsum("nk,nk->n", self._history[index], self._table[phase])
        self._out = end
        keep = int((end * down + centre) // up) - self._taps + 1 - self._base
        if keep > 0:
            self._history = self._history[keep:]
            self._base += keep
        return bytes(np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes())


# --------------------------------------------------------------------------- the two directions


class Inbound:
    """The caller's audio: μ-law payloads at 8 kHz to PCM16 at the pipeline's rate."""

    __slots__ = ("_resampler",)

    def __init__(self, rate: int) -> None:
        self._resampler = Resampler(TWILIO_RATE, rate)

    def decode(self, payload: bytes) -> bytes:
        return self._resampler.process(ulaw_to_pcm16(payload))


class Outbound:
    """The bot's audio: PCM16 at the pipeline's rate to 8 kHz μ-law, in 20 ms frames.

    One reply at a time: :meth:`flush` ends it (the resampler's tail, the last
    frame padded with silence), :meth:`reset` drops it (a clear).
    """

    __slots__ = ("_pending", "_resampler")

    def __init__(self, rate: int) -> None:
        self._resampler = Resampler(rate, TWILIO_RATE)
        self._pending = b""

    def encode(self, pcm: bytes) -> list[bytes]:
        """The whole frames available after ``pcm`` (the rest waits for more)."""
        return self._frames(pcm16_to_ulaw(self._resampler.process(pcm)))

    def flush(self) -> list[bytes]:
        """The rest of the reply, its last frame padded with silence."""
        tail = self._pending + pcm16_to_ulaw(self._resampler.process(b"", last=True))
        self._pending = b""
        if not tail:
            return []
        short = -len(tail) % FRAME_BYTES
        frames = self._frames(tail + bytes([ULAW_SILENCE]) * short)
        return frames

    def reset(self) -> None:
        self._resampler.reset()
        self._pending = b""

    def _frames(self, ulaw: bytes) -> list[bytes]:
        data = self._pending + ulaw
        cut = len(data) - len(data) % FRAME_BYTES
        self._pending = data[cut:]
        return [data[i : i + FRAME_BYTES] for i in range(0, cut, FRAME_BYTES)]
