"""Whisper tiny.en (faster-whisper): the accurate ASR, one final per speech segment.

Not streaming: the node collects the audio of each VAD speech segment (with
the pre-roll of ``rspp.nodes.utterance``) and transcribes it when the segment
ends, in the model thread pool. No partials, so no speculation on partials;
pair it with a streaming ASR when you want both.

It moves with a session like every segment ASR (:mod:`rspp.nodes.asr_segment`).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from rspp.kernel.node import NodeConfig
from rspp.nodes.asr_segment import SegmentAsr
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.whisper import WhisperTranscriber

__all__ = ["WhisperAsr", "WhisperConfig"]


class WhisperConfig(NodeConfig):
    beam_size: Annotated[int, Meta(ge=1, le=8)] = 1
    cpu_threads: Annotated[int, Meta(ge=1, le=64)] = 2
    preroll_ms: Annotated[float, Meta(ge=0.0)] = 600.0
    #: The longest utterance kept (older audio of a longer one is dropped).
    max_utterance_s: Annotated[float, Meta(gt=0.0)] = 30.0


class WhisperAsr(SegmentAsr):
    """Whisper tiny.en, a final per segment."""

    Config = WhisperConfig

    @classmethod
    def preload(cls, config: WhisperConfig) -> None:
        WhisperTranscriber(config.cpu_threads, config.beam_size)

    def __init__(self, config: WhisperConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._whisper = WhisperTranscriber(config.cpu_threads, config.beam_size)

    async def transcribe(self, pcm: bytes, rate: int) -> str:
        return await run_blocking(self._whisper.transcribe, pcm, rate)
