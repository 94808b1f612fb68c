"""What every segment-at-a-time ASR node does around the transcription itself.

A non-streaming recogniser (Whisper, a transcription API) gets the audio of
each VAD speech segment whole: :class:`SegmentAsr` collects it (with the
pre-roll of :mod:`rspp.nodes.utterance`, so the first syllable is not lost)
and, when the segment ends, hands it to the subclass's :meth:`transcribe` --
one ``asr.final`` per segment, no partials.

Moving a session: the State holds the pre-roll, the audio of the segment in
progress, and that of a segment being transcribed, so a restored node hands
out the same finals (the one in the middle of its transcription is done again).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec

from rspp.events import AsrFinal, Event
from rspp.kernel.node import Node
from rspp.nodes.utterance import SegmentAudio, SegmentState

__all__ = ["SegmentAsr", "SegmentAsrState", "Transcribing"]


class Transcribing(msgspec.Struct, kw_only=True):
    """A segment being transcribed: the event that ended it, and its audio."""

    seq: int
    pcm: bytes
    rate: int


class SegmentAsrState(msgspec.Struct, kw_only=True):
    """What a segment-at-a-time ASR node moves with a session."""

    segment: SegmentState
    transcribing: Transcribing | None = None


class SegmentAsr(Node[Any]):
    """Base of segment-at-a-time ASR nodes; subclasses implement :meth:`transcribe`.

    Their config needs ``preroll_ms`` and ``max_utterance_s``.
    """

    consumes: ClassVar[tuple[str, ...]] = ("audio.in", "vad.speech_start", "vad.speech_end")
    produces: ClassVar[tuple[str, ...]] = ("asr.final",)
    State = SegmentAsrState
    resumable = True

    def __init__(self, config: Any, ctx: Any) -> None:
        super().__init__(config, ctx)
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
        text = await self.transcribe(work.pcm, work.rate)
        self._transcribing = None  # done before it leaves: a move never repeats it
        yield AsrFinal(text=text)

    async def transcribe(self, pcm: bytes, rate: int) -> str:
        """The transcript of one segment's PCM16 mono audio."""
        raise NotImplementedError

    def snapshot(self) -> SegmentAsrState:
        return SegmentAsrState(segment=self._segment.snapshot(), transcribing=self._transcribing)

    def restore(self, state: SegmentAsrState) -> None:
        self._segment.restore(state.segment)
        self._transcribing = state.transcribing
