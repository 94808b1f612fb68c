"""What a session did, as a user would tell it, and the files that show it.

:class:`Recorder` watches a session (an observer plus the client sink) and
:func:`report` turns what it saw into a :class:`SessionReport`: each exchange
(what the user said, what the bot generated, what the user actually heard,
whether it was cut off, its latency breakdown), the session's counters, and
the audio. :func:`write_outputs` writes the bot's audio, a stereo recording of
the whole call (user left, bot right, on the session clock), the transcript,
the event log and the timeline page.
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from rspp.events import AudioIn, AudioOut, Event, JsonCodec, LlmDelta
from rspp.kernel.latency import SpeculationStats, TurnLatency
from rspp.kernel.session import Session, SessionStats
from rspp.observability import Timeline, write_html
from rspp.testing.sinks import RecordingSink

__all__ = ["Recorder", "SessionReport", "TurnReport", "report", "write_outputs"]


@dataclass
class TurnReport:
    """One exchange, as the user experienced it."""

    turn: int
    user: str
    reply: str
    heard: str
    interrupted: bool
    latency: TurnLatency | None


@dataclass
class SessionReport:
    turns: list[TurnReport]
    stats: SessionStats
    speculation: SpeculationStats
    bot_pcm: bytes
    #: Stereo PCM16 of the call: user on the left, bot on the right, time-aligned.
    call_pcm: bytes
    sample_rate: int
    timeline: Timeline
    events: list[Event] = field(default_factory=list)


class Recorder:
    """Attach to a session: ``observers=[recorder]`` and ``sinks={"client": recorder.sink}``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.timeline = Timeline()
        self.sink = RecordingSink()
        #: When the last event other than input audio was seen (session clock, ns).
        self.last_activity_ns = 0
        #: The user spoke and no reply to it has been committed yet (a transcript may come).
        self.user_turn_open = False

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.timeline(event)
        kind = event.kind
        if kind != "audio.in":
            self.last_activity_ns = round(asyncio.get_running_loop().time() * 1e9)
            if kind in ("turn.commit", "turn.done", "turn.interrupted"):
                self.user_turn_open = False
            elif kind in ("turn.start", "vad.speech_start"):
                self.user_turn_open = True


def report(session: Session, recorder: Recorder) -> SessionReport:
    """What ``session`` did, from what ``recorder`` saw."""
    generated: dict[int, str] = {}
    for ev in recorder.events:
        if isinstance(ev, LlmDelta):
            generated[ev.turn] = generated.get(ev.turn, "") + ev.text
    latencies = {lat.turn: lat for lat in session.turn_latencies}
    history = session.conversation.history()
    turns = [
        TurnReport(
            turn=assistant.turn,
            user=user.text,
            reply=generated.get(assistant.turn, ""),
            heard=assistant.text,
            interrupted=assistant.interrupted,
            latency=latencies.get(assistant.turn),
        )
        for user, assistant in zip(history[::2], history[1::2], strict=False)
    ]
    rate = session.pipeline.spec.audio.sample_rate
    return SessionReport(
        turns=turns,
        stats=session.stats,
        speculation=session.speculation,
        bot_pcm=recorder.sink.pcm(),
        call_pcm=_call_audio(recorder, rate),
        sample_rate=rate,
        timeline=recorder.timeline,
        events=recorder.events,
    )


def _call_audio(recorder: Recorder, rate: int) -> bytes:
    """User (left) and bot (right) on one time axis: what a listener on the line would hear."""
    user = [ev for ev in recorder.events if isinstance(ev, AudioIn) and ev.channels == 1]
    bot = [(t, ev) for t, ev in recorder.sink.records if isinstance(ev, AudioOut)]
    if not user and not bot:
        return b""
    start = min([u.origin_ns for u in user] + [t for t, _ in bot])
    end = max([u.origin_ns + u.duration_ns for u in user] + [t + ev.duration_ns for t, ev in bot])
    track = np.zeros((int((end - start) * rate / 1e9) + 1, 2), dtype=np.int16)

    def place(channel: int, at_ns: int, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2")
        i = int((at_ns - start) * rate / 1e9)
        track[i : i + len(samples), channel] = samples[: max(0, len(track) - i)]

    for heard in user:
        place(0, heard.origin_ns, heard.pcm)
    for t, said in bot:
        place(1, t, said.pcm)
    return track.tobytes()


def _wav(pcm: bytes, rate: int, channels: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def write_outputs(result: SessionReport, out: Path, title: str = "RSPP call") -> list[Path]:
    """Write bot.wav, call.wav, transcript.json, events.jsonl and timeline.html into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    bot = out / "bot.wav"
    bot.write_bytes(_wav(result.bot_pcm, result.sample_rate, 1))
    call = out / "call.wav"
    call.write_bytes(_wav(result.call_pcm, result.sample_rate, 2))
    transcript = out / "transcript.json"
    transcript.write_bytes(msgspec.json.format(msgspec.json.encode(result.turns)))
    log = out / "events.jsonl"
    codec = JsonCodec()
    with log.open("wb") as f:
        for ev in result.events:
            if ev.kind not in ("audio.out", "audio.in"):
                f.write(codec.encode(ev) + b"\n")
    timeline = write_html(result.timeline, out / "timeline.html", title)
    return [bot, call, transcript, log, timeline]
