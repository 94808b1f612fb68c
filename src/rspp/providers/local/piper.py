"""Piper TTS with the bundled CC0 voice ("joe", US English): local, fast neural speech.

The voice is loaded once per process and shared; synthesis is serialized per
voice (its espeak-ng phonemizer is a process-global C library). Output is
resampled with soxr from the voice's rate (22.05 kHz) to the rate the session
plays (16 kHz by default).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rspp.providers.local.assets import piper_voice
from rspp.providers.local.blocking import load_once

__all__ = ["PiperTts", "resample_pcm16"]


def resample_pcm16(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    """Resample mono PCM16 with soxr (high quality, fast)."""
    if rate_in == rate_out or not pcm:
        return pcm
    import soxr

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    out = soxr.resample(samples, rate_in, rate_out)
    return bytes((np.clip(out, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())


@load_once
def _load(model: Path, config: Path) -> tuple[Any, threading.Lock]:
    from piper import PiperVoice

    return PiperVoice.load(model, config_path=config), threading.Lock()


class PiperTts:
    """A Piper voice. ``synthesize*`` block: call them from the model thread pool."""

    def __init__(self, model: Path | None = None, config: Path | None = None) -> None:
        if model is None or config is None:
            model, config = piper_voice()
        self._voice, self._lock = _load(Path(model), Path(config))

    @property
    def native_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    def sentences(
        self, text: str, *, sample_rate: int = 16000, length_scale: float | None = None
    ) -> Iterator[tuple[bytes, str]]:
        """Synthesize ``text`` sentence by sentence: (PCM16 at ``sample_rate``, its phonemes)."""
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=length_scale)
        with self._lock:
            chunks = list(self._voice.synthesize(text, syn_config=config))
        for chunk in chunks:
            pcm = resample_pcm16(chunk.audio_int16_bytes, chunk.sample_rate, sample_rate)
            yield pcm, "".join(chunk.phonemes)

    def synthesize(
        self, text: str, *, sample_rate: int = 16000, length_scale: float | None = None
    ) -> bytes:
        """All of ``text`` as PCM16 at ``sample_rate``."""
        return b"".join(
            pcm
            for pcm, _ in self.sentences(text, sample_rate=sample_rate, length_scale=length_scale)
        )
