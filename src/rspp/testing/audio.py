"""Deterministic synthetic audio for tests and fakes: speech-like noise, tones, silence, WAV."""

from __future__ import annotations

import functools
import io
import math
import wave

import numpy as np

__all__ = ["silence", "speech_like", "tone", "wav_bytes"]


def _level(level_db: float) -> float:
    return 32767.0 * 10 ** (level_db / 20)


def silence(duration_ms: float, sample_rate: int = 16000) -> bytes:
    """Digital silence."""
    return bytes(2 * int(sample_rate * duration_ms / 1000))


def speech_like(
    duration_ms: float, sample_rate: int = 16000, *, level_db: float = -20.0, seed: int = 0
) -> bytes:
    """Noise with a 4 Hz syllable envelope (never silent): reads as speech to an energy VAD."""
    n = int(sample_rate * duration_ms / 1000)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    envelope = 0.6 + 0.4 * np.sin(2 * math.pi * 4.0 * t + rng.uniform(0, 2 * math.pi))
    carrier = rng.standard_normal(n) * 0.5 + np.sin(2 * math.pi * 180.0 * t) * 0.5
    peak = np.max(np.abs(carrier)) or 1.0
    samples = carrier / peak * envelope * _level(level_db) * 2
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


@functools.lru_cache(maxsize=256)
def tone(
    duration_ms: float, sample_rate: int = 16000, *, freq: float = 220.0, level_db: float = -18.0
) -> bytes:
    """A vowel-ish tone (fundamental plus two harmonics); cached (bytes are immutable:
    the fake TTS asks for the same few chunks many times a second per call)."""
    n = int(sample_rate * duration_ms / 1000)
    t = np.arange(n) / sample_rate
    wave_ = (
        np.sin(2 * math.pi * freq * t)
        + 0.5 * np.sin(2 * math.pi * 2 * freq * t)
        + 0.25 * np.sin(2 * math.pi * 3 * freq * t)
    ) / 1.75
    return (wave_ * _level(level_db)).astype("<i2").tobytes()


def wav_bytes(pcm: bytes, sample_rate: int = 16000, channels: int = 1) -> bytes:
    """PCM16 wrapped in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()
