"""Whisper tiny.en (faster-whisper): the accurate ASR, one final per speech segment.

Not streaming: the node collects the audio of each VAD speech segment (with
the pre-roll of ``rspp.nodes.utterance``) and transcribes it when the segment
ends, in the model thread pool. No partials, so no speculation on partials;
pair it with a streaming ASR when you want both.

Moving a session: the State holds the pre-roll, the audio of the segment in
progress and that of a segment being transcribed, so a restored node hands
out the same finals (the one in the middle of transcription is done again).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import AsrFinal, Event
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.utterance import SegmentAudio, SegmentState
from rspp.providers.local.blocking import run_blocking
from rspp.providers.local.whisper import WhisperTranscriber

__all__ = ["SegmentAsrState", "Transcribing", "WhisperAsr", "WhisperConfig"]


class WhisperConfig(NodeConfig):
    beam_size: Annotated[int, Meta(ge=1, le=8)] = 1
    cpu_threads: Annotated[int, Meta(ge=1, le=64)] = 2
    preroll_ms: Annotated[float, Meta(ge=0.0)] = 600.0
    #: The longest utterance kept (older audio of a longer one is dropped).
    max_utterance_s: Annotated[float, Meta(gt=0.0)] = 30.0


class Transcribing(msgspec.Struct, kw_only=True):
    """A segment being transcribed: the event that ended it, and its audio."""

    seq: int
    pcm: bytes
    rate: int


class SegmentAsrState(msgspec.Struct, kw_only=True):
    """What a segment-at-a-time ASR node moves with a session."""

    segment: SegmentState
    transcribing: Transcribing | None = None


class WhisperAsr(Node[WhisperConfig]):
    """Whisper tiny.en, a final per segment."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.final",)
    Config = WhisperConfig
    State = SegmentAsrState
    resumable = True

    @classmethod
    def preload(cls, config: WhisperConfig) -> None:
        WhisperTranscriber(config.cpu_threads, config.beam_size)

    def __init__(self, config: WhisperConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._whisper = WhisperTranscriber(config.cpu_threads, config.beam_size)
        self._segment = SegmentAudio(config.preroll_ms, config.max_utterance_s)
        self._transcribing: Transcribing | None = None

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        work = self._transcribing
        if work is None or work.seq != event.seq:
            pcm = self._segment.feed(event)
            if pcm is None:
                return
            work = self._transcribing = Transcribing(
                seq=event.seq, pcm=pcm, rate=self._segment.rate
            )
        text = await run_blocking(self._whisper.transcribe, work.pcm, work.rate)
        self._transcribing = None  # done before it leaves: a move never repeats it
        yield AsrFinal(text=text)

    def snapshot(self) -> SegmentAsrState:
        return SegmentAsrState(segment=self._segment.snapshot(), transcribing=self._transcribing)

    def restore(self, state: SegmentAsrState) -> None:
        self._segment.restore(state.segment)
        self._transcribing = state.transcribing
