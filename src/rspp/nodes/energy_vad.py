"""An energy (RMS level) voice activity detector.

Light and dependency-free (beyond numpy): speech is audio above a level
threshold for ``start_ms``; it ends after ``hangover_ms`` below it. Fine for
clean input and the test kit; the model-based VADs are the accurate option.

On speech start it emits ``vad.speech_start``, ``turn.start`` and -- so that
the kernel can cut the bot off -- ``control.interrupt``. The kernel decides
whether that interrupt is accepted (only while a reply is in progress).
``vad.speech_end`` carries the time speech actually ended as its origin, so
the VAD's own hangover shows up in the latency breakdown.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import numpy as np
from msgspec import Meta

from rspp.events import AudioIn, Event, Interrupt, TurnStart, VadSpeechEnd, VadSpeechStart
from rspp.kernel.node import Node, NodeConfig

__all__ = ["EnergyVad", "rms_dbfs"]


def rms_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dB relative to full scale (-inf dB for digital silence)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if samples.size == 0:
        return -math.inf
    mean_square = float(np.dot(samples, samples)) / samples.size
    if mean_square <= 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square / (32768.0 * 32768.0))


class EnergyVadConfig(NodeConfig):
    #: Frames at or above this RMS level (dBFS) count as voiced.
    threshold_db: Annotated[float, Meta(le=0.0)] = -45.0
    #: Voiced audio needed before speech is declared (rejects clicks).
    start_ms: Annotated[float, Meta(ge=0.0)] = 60.0
    #: Unvoiced audio needed before speech is declared over.
    hangover_ms: Annotated[float, Meta(gt=0.0)] = 300.0
    #: Emit ``control.interrupt`` when speech starts.
    interrupt: bool = True


class EnergyVad(Node[EnergyVadConfig]):
    """Threshold VAD with start and hangover windows."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)
    produces: ClassVar[tuple[str, ...]] = ("vad.speech_start", "vad.speech_end", "turn.start")
    Config = EnergyVadConfig

    def __init__(self, config: EnergyVadConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.speaking = False
        self._run_ns = 0  # voiced (while silent) or unvoiced (while speaking) run length
        self._run_origin = 0  # origin of the first frame of that run
        self._speech_origin = 0

    def on_event(self, event: Event) -> None:
        assert isinstance(event, AudioIn)
        voiced = rms_dbfs(event.pcm) >= self.config.threshold_db
        if voiced != self.speaking:
            if self._run_ns == 0:
                self._run_origin = event.origin_ns
            self._run_ns += event.duration_ns
        else:
            self._run_ns = 0
            return
        if not self.speaking and self._run_ns >= self.config.start_ms * 1e6:
            self.speaking = True
            self._run_ns = 0
            self._speech_origin = self._run_origin
            self.emit(VadSpeechStart(origin_ns=self._run_origin))
            self.emit(TurnStart(origin_ns=self._run_origin))
            if self.config.interrupt:
                self.emit(Interrupt(origin_ns=self._run_origin))
        elif self.speaking and self._run_ns >= self.config.hangover_ms * 1e6:
            self.speaking = False
            self._run_ns = 0
            speech_ms = (self._run_origin - self._speech_origin) / 1e6
            self.emit(VadSpeechEnd(origin_ns=self._run_origin, speech_ms=speech_ms))

    def snapshot(self) -> Any:
        return {
            "speaking": self.speaking,
            "run_ns": self._run_ns,
            "run_origin": self._run_origin,
            "speech_origin": self._speech_origin,
        }

    def restore(self, state: Any) -> None:
        self.speaking = bool(state["speaking"])
        self._run_ns = int(state["run_ns"])
        self._run_origin = int(state["run_origin"])
        self._speech_origin = int(state["speech_origin"])
