"""What a call was like at the client's end: the turns, the words, the audio, the waits.

:class:`CallRecord` is fed every happening of a call (and the caller's own
marks: when the user stopped speaking, what they typed) and keeps what a
report needs. Latency here is *measured at the client*: from the end of the
user's speech (the caller marks it -- only it knows when it stopped sending
speech) to the first sample of the next reply the playout actually played,
so it includes the network both ways and the client's own buffering, which
the server's ``call.latency`` cannot see.

Pure bookkeeping: the times are the shell's clock (seconds), nothing here
reads one.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from typing import Any

from rspp.events import Event
from rspp.transports.call.client import (
    BotAudio,
    Happening,
    Opened,
    Played,
    Received,
    ReplyEnded,
    ReplyStarted,
    ServerLatency,
)
from rspp.transports.call.wire import AudioFormat

__all__ = ["CallRecord", "Transcript", "TurnRecord"]

#: A gap in the bot's audio shorter than this is rounding, not silence.
_GAP_S = 0.005


@dataclass
class TurnRecord:
    """One reply, as the client saw and played it."""

    turn: int
    #: What the reply answers (``turn.commit`` / a confirmed ``turn.speculate``, or typed text).
    user: str = ""
    #: The reply's text as generated (``llm.delta``).
    reply: str = ""
    #: The words of the audio frames received.
    sent_text: str = ""
    #: The words of the audio frames played to the end.
    heard: str = ""
    received_ms: float = 0.0
    played_ms: float = 0.0
    #: When its first sample was played (the shell's clock), if it was.
    started_at: float | None = None
    ended: bool = False
    interrupted: bool = False
    #: End of the user's speech (or the typed text sent) -> first sample played (ms).
    latency_ms: float | None = None
    #: ``call.latency``: the server's breakdown (ms).
    server: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "user": self.user,
            "reply": self.reply,
            "heard": self.heard,
            "sent_text": self.sent_text,
            "received_ms": round(self.received_ms, 1),
            "played_ms": round(self.played_ms, 1),
            "interrupted": self.interrupted,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "server_latency_ms": {k: round(v, 3) for k, v in self.server.items()},
        }


@dataclass(frozen=True)
class Transcript:
    """A final transcript of the user (``asr.final``), or a line they typed."""

    at: float
    turn: int
    text: str
    typed: bool = False


class CallRecord:
    """Everything a report of one call needs, fed by the call's happenings."""

    def __init__(self, output: AudioFormat, started_at: float = 0.0) -> None:
        self.output = output
        self.started_at = started_at
        self.session = ""
        self.pipeline = ""
        self.turns: dict[int, TurnRecord] = {}
        self.transcripts: list[Transcript] = []
        #: Every ABI event received, in order.
        self.events: list[Event] = []
        #: When each reply's first sample was played, in order.
        self.reply_starts: list[float] = []
        self.replies_ended = 0
        self.resumes = 0
        #: The last time anything happened (a frame arrived, audio played).
        self.last_activity = started_at
        self._speech_end: float | None = None
        self._audio = bytearray()
        self._sample = 2 * output.channels
        self._rate = output.sample_rate * self._sample

    # -- the caller's marks --------------------------------------------------------------

    def speech_ended(self, at: float) -> None:
        """The user stopped speaking at ``at``: the next reply to play is timed from here."""
        self._speech_end = at

    def typed(self, text: str, at: float) -> None:
        """The user typed ``text`` at ``at`` (timed like the end of speech)."""
        self.transcripts.append(Transcript(at, 0, text, typed=True))
        self._speech_end = at

    # -- happenings ----------------------------------------------------------------------

    def on(self, happening: Happening, now: float) -> None:
        self.last_activity = max(self.last_activity, now)
        if isinstance(happening, Played):
            self._played(happening)
        elif isinstance(happening, Received):
            self._event(happening.event, now)
        elif isinstance(happening, BotAudio):
            frame = happening.frame
            turn = self.turn(frame.turn)
            turn.received_ms += len(frame.pcm) * 1000 / self._rate
            turn.sent_text += frame.text
        elif isinstance(happening, ReplyStarted):
            turn = self.turn(happening.turn)
            turn.started_at = happening.at
            self.reply_starts.append(happening.at)
            mark = self._speech_end
            if mark is not None and mark <= happening.at:
                turn.latency_ms = (happening.at - mark) * 1000
                self._speech_end = None
        elif isinstance(happening, ReplyEnded):
            turn = self.turn(happening.turn)
            if not turn.ended:
                turn.ended = True
                turn.interrupted = happening.interrupted
                self.replies_ended += 1
        elif isinstance(happening, ServerLatency):
            self.turn(happening.turn).server.update(happening.values)
        elif isinstance(happening, Opened):
            ready = happening.ready
            self.session, self.pipeline = ready.session, ready.pipeline
            self.resumes += ready.resumed

    def turn(self, turn: int) -> TurnRecord:
        record = self.turns.get(turn)
        if record is None:
            record = self.turns[turn] = TurnRecord(turn)
        return record

    def _event(self, event: Event, now: float) -> None:
        self.events.append(event)
        kind = event.kind
        if kind in ("turn.commit", "turn.speculate"):
            self.turn(event.turn).user = getattr(event, "text", "")
        elif kind == "llm.delta":
            self.turn(event.turn).reply += getattr(event, "text", "")
        elif kind == "asr.final":
            self.transcripts.append(Transcript(now, event.turn, getattr(event, "text", "")))

    def _played(self, played: Played) -> None:
        turn = self.turn(played.turn)
        turn.played_ms += len(played.pcm) * 1000 / self._rate
        turn.heard += played.text
        audio = self._audio
        offset = int((played.at - self.started_at) * self.output.sample_rate) * self._sample
        if offset > len(audio) + _GAP_S * self._rate:
            audio.extend(bytes(offset - len(audio)))  # the bot was silent meanwhile
        audio.extend(played.pcm)

    # -- results -------------------------------------------------------------------------

    @property
    def replies(self) -> list[TurnRecord]:
        """The turns that had a reply (text or audio), in order."""
        return [t for _, t in sorted(self.turns.items()) if t.reply or t.received_ms or t.sent_text]

    def bot_audio(self) -> bytes:
        """What the bot said as the client played it, on the call's timeline (PCM16)."""
        return bytes(self._audio)

    def bot_wav(self) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(self.output.channels)
            w.setsampwidth(2)
            w.setframerate(self.output.sample_rate)
            w.writeframes(self._audio)
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "pipeline": self.pipeline,
            "resumes": self.resumes,
            "turns": [t.to_json() for t in self.replies],
            "transcripts": [
                {
                    "turn": t.turn,
                    "text": t.text,
                    "typed": t.typed,
                    "at_s": round(t.at - self.started_at, 3),
                }
                for t in self.transcripts
            ],
            "latency_ms": {
                str(t.turn): None if t.latency_ms is None else round(t.latency_ms, 1)
                for t in self.replies
            },
        }
