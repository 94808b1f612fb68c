"""Whisper tiny.en (faster-whisper): the accurate ASR, one final per speech segment.

Not streaming: the node collects the audio of each VAD speech segment (with
the pre-roll of ``rspp.nodes.utterance``) and transcribes it when the segment
ends, in the model thread pool. No partials, so no speculation on partials;
pair it with a streaming ASR when you want both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import AsrFinal, AudioIn, Event, VadSpeechEnd, VadSpeechStart
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.utterance import UtteranceAudio
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.whisper import WhisperTranscriber

__all__ = ["WhisperAsr", "WhisperConfig"]


class WhisperConfig(NodeConfig):
    beam_size: Annotated[int, Meta(ge=1, le=8)] = 1
    cpu_threads: Annotated[int, Meta(ge=1, le=64)] = 2
    preroll_ms: Annotated[float, Meta(ge=0.0)] = 600.0
    #: The longest utterance kept (older audio of a longer one is dropped).
    max_utterance_s: Annotated[float, Meta(gt=0.0)] = 30.0


class WhisperAsr(Node[WhisperConfig]):
    """Whisper tiny.en, a final per segment."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.final",)
    Config = WhisperConfig

    @classmethod
    def preload(cls, config: WhisperConfig) -> None:
        WhisperTranscriber(config.cpu_threads, config.beam_size)

    def __init__(self, config: WhisperConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._whisper = WhisperTranscriber(config.cpu_threads, config.beam_size)
        self._audio = UtteranceAudio(config.preroll_ms)
        self._frames: list[bytes] = []
        self._bytes = 0
        self._rate = 16000

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        if isinstance(event, AudioIn):
            self._rate = event.sample_rate
            if self._audio.heard(event):
                self._keep(event.pcm)
        elif isinstance(event, VadSpeechStart):
            self._frames, self._bytes = [], 0
            for frame in self._audio.start(event.origin_ns):
                self._keep(frame.pcm)
        elif isinstance(event, VadSpeechEnd) and self._audio.active:
            self._audio.end()
            pcm, self._frames, self._bytes = b"".join(self._frames), [], 0
            yield AsrFinal(text=await run_blocking(self._whisper.transcribe, pcm, self._rate))

    def _keep(self, pcm: bytes) -> None:
        self._frames.append(pcm)
        self._bytes += len(pcm)
        limit = int(self.config.max_utterance_s * self._rate) * 2
        while self._bytes > limit and len(self._frames) > 1:
            self._bytes -= len(self._frames.pop(0))
