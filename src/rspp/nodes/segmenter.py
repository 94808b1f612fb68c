"""From voiced/unvoiced frames to speech segments: the logic every VAD node shares.

A frame classifier (an energy threshold, Silero, WebRTC) says whether each
piece of audio is voiced; the :class:`SpeechSegmenter` turns that into
decisions with hysteresis in time: speech starts after ``start_ms`` of voice
(clicks are ignored) and ends after ``hangover_ms`` without it (short pauses
are not ends). Each decision carries the origin time of the audio where it
really happened -- the first voiced frame, the first frame of silence -- so the
latency breakdown counts the VAD's own hangover. Pure: no I/O, no clock.

:class:`VadNodeConfig` and :class:`SegmentingVad` give VAD nodes the common
config and the common emissions (``vad.speech_start``, ``turn.start``, an
optional ``control.interrupt``, ``vad.speech_end``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import Event, Interrupt, TurnStart, VadSpeechEnd, VadSpeechStart
from rspp.kernel.node import Node, NodeConfig

__all__ = [
    "SegmenterState",
    "SegmentingVad",
    "SpeechEnded",
    "SpeechSegmenter",
    "SpeechStarted",
    "VadNodeConfig",
    "VadState",
]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    origin_ns: int  # the first voiced audio


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    origin_ns: int  # the first audio of the silence that ended it
    speech_ms: float


class SegmenterState(msgspec.Struct, array_like=True):
    """A segmenter's state (times in session time)."""

    speaking: bool
    run_ns: int
    run_origin: int
    speech_origin: int


class SpeechSegmenter:
    """Start and hangover windows over a stream of classified audio."""

    __slots__ = ("_run_ns", "_run_origin", "_speech_origin", "hangover_ns", "speaking", "start_ns")

    def __init__(self, start_ms: float, hangover_ms: float) -> None:
        self.start_ns = int(start_ms * 1e6)
        self.hangover_ns = int(hangover_ms * 1e6)
        self.speaking = False
        self._run_ns = 0  # voiced (while silent) or unvoiced (while speaking) run length
        self._run_origin = 0
        self._speech_origin = 0

    def feed(
        self, voiced: bool, duration_ns: int, origin_ns: int
    ) -> SpeechStarted | SpeechEnded | None:
        """One classified piece of audio; returns a decision if one is due."""
        if voiced == self.speaking:
            self._run_ns = 0
            return None
        if self._run_ns == 0:
            self._run_origin = origin_ns
        self._run_ns += duration_ns
        if not self.speaking and self._run_ns >= self.start_ns:
            self.speaking = True
            self._run_ns = 0
            self._speech_origin = self._run_origin
            return SpeechStarted(self._run_origin)
        if self.speaking and self._run_ns >= self.hangover_ns:
            self.speaking = False
            self._run_ns = 0
            return SpeechEnded(self._run_origin, (self._run_origin - self._speech_origin) / 1e6)
        return None

    def snapshot(self) -> SegmenterState:
        return SegmenterState(self.speaking, self._run_ns, self._run_origin, self._speech_origin)

    def restore(self, state: SegmenterState) -> None:
        self.speaking = state.speaking
        self._run_ns = state.run_ns
        self._run_origin = state.run_origin
        self._speech_origin = state.speech_origin


class VadNodeConfig(NodeConfig):
    """What every VAD node has."""

    #: Voiced audio needed before speech is declared (rejects clicks).
    start_ms: Annotated[float, Meta(ge=0.0)] = 60.0
    #: Unvoiced audio needed before speech is declared over.
    hangover_ms: Annotated[float, Meta(gt=0.0)] = 300.0
    #: Emit ``control.interrupt`` when speech starts (without a turn manager deciding).
    interrupt: bool = True


class VadState(msgspec.Struct, kw_only=True):
    """What a VAD node moves with a session (subclasses add what their classifier keeps)."""

    segmenter: SegmenterState


class SegmentingVad(Node[Any]):
    """Base of VAD nodes: owns the segmenter and emits its decisions."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)
    produces: ClassVar[tuple[str, ...]] = ("vad.speech_start", "vad.speech_end", "turn.start")
    State: ClassVar[type[msgspec.Struct] | None] = VadState

    def __init__(self, config: VadNodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.segmenter = SpeechSegmenter(config.start_ms, config.hangover_ms)

    @property
    def speaking(self) -> bool:
        return self.segmenter.speaking

    def events_for(self, decision: SpeechStarted | SpeechEnded | None) -> list[Event]:
        """The events a segmenter decision produces (to emit or to yield)."""
        if isinstance(decision, SpeechStarted):
            started: list[Event] = [
                VadSpeechStart(origin_ns=decision.origin_ns),
                TurnStart(origin_ns=decision.origin_ns),
            ]
            if self.config.interrupt:
                started.append(Interrupt(origin_ns=decision.origin_ns))
            return started
        if isinstance(decision, SpeechEnded):
            return [VadSpeechEnd(origin_ns=decision.origin_ns, speech_ms=decision.speech_ms)]
        return []

    def snapshot(self) -> Any:
        return VadState(segmenter=self.segmenter.snapshot())

    def restore(self, state: Any) -> None:
        self.segmenter.restore(state.segmenter)
