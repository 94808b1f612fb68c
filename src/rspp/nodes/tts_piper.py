"""Piper TTS as a node: natural local speech, a piece of text at a time.

Each piece the chunker releases (a clause or a sentence) is synthesized in the
model thread pool and streamed out in ``chunk_ms`` chunks. Piper renders a
piece whole, so the time to first audio is the synthesis time of the first
piece: ``clause`` chunking with a small ``min_chars`` keeps it short. A
cancelled reply stops after the piece being rendered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import TtsAudio
from rspp.nodes.tts_base import ChunkedTts, TtsConfig, audio_chunks
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.piper import PiperTts

__all__ = ["PiperTtsConfig", "PiperTtsNode"]


class PiperTtsConfig(TtsConfig):
    #: Speaking rate: above 1 slower, below 1 faster; None: the voice's own.
    length_scale: Annotated[float, Meta(gt=0.1, le=4.0)] | None = None


class PiperTtsNode(ChunkedTts):
    """Piper with the bundled CC0 voice."""

    Config: ClassVar[type[PiperTtsConfig]] = PiperTtsConfig

    @classmethod
    def preload(cls, config: PiperTtsConfig) -> None:
        PiperTts()

    def __init__(self, config: PiperTtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.voice = PiperTts()

    async def synthesize(self, text: str, turn: int, skip: int = 0) -> AsyncIterator[TtsAudio]:
        cfg = self.config
        pcm = await run_blocking(
            self.voice.synthesize, text, sample_rate=cfg.sample_rate, length_scale=cfg.length_scale
        )
        for chunk in audio_chunks(pcm, text, cfg.sample_rate, cfg.chunk_ms, skip):
            yield chunk
