"""Telephone audio: G.711 μ-law against the reference, streaming resampling, 20 ms framing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from rspp.testing.audio import speech_like
from rspp.transports.twilio.audio import (
    FRAME_BYTES,
    Inbound,
    Outbound,
    Resampler,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

ALL_PCM16 = np.arange(-32768, 32768, dtype="<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def tone(freq: float, rate: int, ms: float, amplitude: float = 10_000.0) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


def db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


def resample_in_chunks(r: Resampler, pcm: bytes, chunk_bytes: int) -> bytes:
    out = [r.process(pcm[i : i + chunk_bytes]) for i in range(0, len(pcm), chunk_bytes)]
    return b"".join(out) + r.process(b"", last=True)


# -- G.711 -------------------------------------------------------------------------------------


def test_ulaw_is_bit_exact_with_the_reference_codec() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # the stdlib's, until Python 3.13
    assert pcm16_to_ulaw(ALL_PCM16) == audioop.lin2ulaw(ALL_PCM16, 2)
    codes = bytes(range(256))
    assert ulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)


def test_ulaw_known_values_and_round_trip() -> None:
    # 0 -> 0xFF (silence), full scale -> 0x80 / 0x00 (G.711's table).
    assert pcm16_to_ulaw(np.array([0, 32767, -32768], "<i2").tobytes()) == b"\xff\x80\x00"
    assert samples(ulaw_to_pcm16(b"\xff\x7f\x80\x00")).tolist() == [0, 0, 32124, -32124]
    codes = bytes(range(256))
    # Every code decodes to a value that encodes back to it (but 0x7F: "-0" becomes +0).
    back = pcm16_to_ulaw(ulaw_to_pcm16(codes))
    assert [c for c, b in zip(codes, back, strict=True) if c != b] == [0x7F]
    # Below the clip level, the error stays within a segment step (at most ~3.5% of the value).
    x = samples(ALL_PCM16)
    y = samples(ulaw_to_pcm16(pcm16_to_ulaw(ALL_PCM16)))
    big = (np.abs(x) > 1000) & (np.abs(x) <= 32124)
    assert np.max(np.abs(x - y)[big] / np.abs(x[big])) < 0.036


# -- resampling --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_in", "rate_out"),
    [(16000, 8000), (8000, 16000), (24000, 8000), (8000, 48000), (22050, 8000), (8000, 44100)],
)
def test_resampling_matches_soxr_and_keeps_time(rate_in: int, rate_out: int) -> None:
    pcm = speech_like(1000, rate_in, seed=3)
    y = samples(resample_in_chunks(Resampler(rate_in, rate_out), pcm, rate_in // 50 * 2))
    # Exactly as many samples as the duration takes, aligned to the input (no delay).
    assert len(y) == len(pcm) // 2 * rate_out // rate_in
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    ref = soxr.resample(x, rate_in, rate_out, quality="VHQ").astype(np.float64)
    # In band (below 3 kHz, where telephone speech lives) they agree to within -40 dB.
    n = min(len(y), len(ref))
    spectrum = np.fft.rfftfreq(n, 1 / rate_out)
    band = spectrum < 3000
    err = np.fft.rfft(y[:n] - ref[:n])[band]
    sig = np.fft.rfft(ref[:n])[band]
    assert db(float(np.linalg.norm(err) / np.linalg.norm(sig))) < -40


def test_a_tone_passes_and_what_8_khz_cannot_carry_is_filtered_out() -> None:
    for freq in (300.0, 1000.0, 3000.0):
        y = samples(resample_in_chunks(Resampler(16000, 8000), tone(freq, 16000, 500), 640))
        ref = samples(tone(freq, 8000, 500))
        mid = slice(800, 3200)
        assert db(float(np.std(y[mid] - ref[mid]) / np.std(ref[mid]))) < -40, freq
    # 5 kHz at 16 kHz would alias to 3 kHz at 8 kHz: it must be (almost) gone.
    y = samples(resample_in_chunks(Resampler(16000, 8000), tone(5000.0, 16000, 500), 640))
    assert db(float(np.std(y[800:3200]) / (10_000 / math.sqrt(2)))) < -55


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=30), st.sampled_from([8000, 24000]))
def test_any_chunking_gives_the_same_samples(sizes: list[int], rate_out: int) -> None:
    """Chunk boundaries cannot click: the output does not depend on how input was cut."""
    pcm = speech_like(300, 16000, seed=1)
    whole = Resampler(16000, rate_out)
    expected = whole.process(pcm, last=True)
    r = Resampler(16000, rate_out)
    out, at = [], 0
    for size in sizes:
        out.append(r.process(pcm[at : at + 2 * size]))
        at += 2 * size
    out.append(r.process(pcm[at:], last=True))
    assert b"".join(out) == expected


def test_it_holds_back_milliseconds_not_blocks() -> None:
    """Each 20 ms chunk comes out at once, less a few ms of filter the first time."""
    for rate_in, rate_out in ((16000, 8000), (8000, 16000)):
        r = Resampler(rate_in, rate_out)
        chunk = bytes(rate_in // 50 * 2)
        first = len(r.process(chunk)) // 2
        assert first >= rate_out // 50 * 0.75  # at most 5 ms held back
        for _ in range(20):
            assert len(r.process(chunk)) // 2 == rate_out // 50


def test_equal_rates_pass_through() -> None:
    r = Resampler(16000, 16000)
    assert r.identity and r.process(b"\x01\x02\x03") == b"\x01\x02"


# -- the two directions ------------------------------------------------------------------------


def test_inbound_ulaw_becomes_pipeline_pcm() -> None:
    inbound = Inbound(16000)
    speech = pcm16_to_ulaw(speech_like(400, 8000))
    pcm = b"".join(inbound.decode(speech[i : i + 160]) for i in range(0, len(speech), 160))
    assert len(pcm) % 2 == 0
    assert len(pcm) // 2 >= 2 * len(speech) - 64  # all of it but the filter's few ms


def test_outbound_pcm_becomes_20_ms_ulaw_frames_padded_at_the_end() -> None:
    out = Outbound(16000)
    pcm = speech_like(1010, 16000)  # 1010 ms: 50 whole frames and a half
    frames = [f for i in range(0, len(pcm), 640) for f in out.encode(pcm[i : i + 640])]
    frames += out.flush()
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert len(frames) == 51
    assert frames[-1][-40:] == b"\xff" * 40  # the last 5 ms are silence padding
    assert out.flush() == []  # nothing left


def test_a_reset_drops_the_reply_in_progress() -> None:
    out = Outbound(16000)
    out.encode(speech_like(30, 16000))
    out.reset()
    assert out.flush() == []
