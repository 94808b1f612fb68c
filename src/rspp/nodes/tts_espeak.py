"""espeak-ng as a node: the light TTS option (robotic, but tens of milliseconds per sentence)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import TtsAudio
from rspp.nodes.tts_base import ChunkedTts, TtsConfig, audio_chunks
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.espeak import EspeakTts
from rspp.providers.local.piper import resample_pcm16

__all__ = ["EspeakTtsConfig", "EspeakTtsNode"]


class EspeakTtsConfig(TtsConfig):
    voice: str = "en-us"
    words_per_minute: Annotated[int, Meta(ge=80, le=450)] = 175


class EspeakTtsNode(ChunkedTts):
    """espeak-ng through ``espeakng-loader``."""

    Config: ClassVar[type[EspeakTtsConfig]] = EspeakTtsConfig

    @classmethod
    def preload(cls, config: EspeakTtsConfig) -> None:
        EspeakTts(config.voice, config.words_per_minute)

    def __init__(self, config: EspeakTtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.engine = EspeakTts(config.voice, config.words_per_minute)

    async def synthesize(self, text: str, turn: int, skip: int = 0) -> AsyncIterator[TtsAudio]:
        cfg = self.config
        pcm = await run_blocking(self.engine.synthesize, text)
        pcm = resample_pcm16(pcm, self.engine.native_rate, cfg.sample_rate)
        for chunk in audio_chunks(pcm, text, cfg.sample_rate, cfg.chunk_ms, skip):
            yield chunk
