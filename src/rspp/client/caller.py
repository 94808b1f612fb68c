"""A caller that talks into a :class:`~rspp.client.call.Call` as a person would.

It sends one frame every ``frame_ms`` for the whole call -- silence while it
listens, the line's audio while it talks -- like a microphone, so the server's
VAD sees real pauses. Each line waits for the bot as
:class:`rspp.testing.ScriptedCaller` does: normally until the replies it
expects so far have been *played* (by the client's playout, not merely
received), then a pause; for a barge-in, until the latest expected reply has
started playing, plus ``barge_in_after_ms``, so the caller talks over the bot.
After the last line it listens until the bot has been quiet for ``tail_ms``.

It marks the end of each stretch of speech it sends (an energy threshold on
the frames), which is where the client's latency of the next reply starts.
"""

from __future__ import annotations

import asyncio
import wave
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from rspp.client.call import Call
from rspp.testing.caller import RealTimeMic

__all__ = ["Caller", "Line", "Spoken", "demo_lines", "wav_line"]

#: A frame louder than this (dBFS, RMS) is speech.
SPEECH_DB = -40.0


@dataclass(frozen=True)
class Line:
    """One thing the caller says: PCM16 in the call's input format."""

    text: str
    audio: bytes = field(repr=False)
    #: Barge in: start this long after the bot's latest reply started playing.
    barge_in_after_ms: float | None = None
    #: Silence before speaking, once it is the caller's turn.
    pause_ms: float = 400.0
    #: Whether the bot should answer (False for a backchannel).
    expects_reply: bool = True


@dataclass(frozen=True)
class Spoken:
    """When a line was spoken (the loop's clock, seconds)."""

    text: str
    start: float
    end: float
    barge_in: bool = False


def demo_lines() -> list[Line]:
    """The demo caller's script (``rspp.agent.demo_script``), 16 kHz mono."""
    from rspp.agent import demo_script

    return [Line(u.text, u.audio, u.barge_in_after_ms) for u in demo_script()]


def wav_line(path: Path) -> tuple[Line, int, int]:
    """A WAV file as one line, with its sample rate and channels (announce them as input)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    if not 8000 <= rate <= 96000 or channels not in (1, 2):
        raise ValueError(
            f"{path}: {rate} Hz, {channels} channels: the protocol takes 8-96 kHz, 1-2"
        )
    return Line(path.name, pcm), rate, channels


def _is_speech(samples: np.ndarray) -> bool:
    if not len(samples):
        return False
    rms = float(np.sqrt(np.mean(samples * samples)))
    return rms > 32768.0 * 10 ** (SPEECH_DB / 20)


@dataclass
class Caller(RealTimeMic):
    """Plays ``lines`` into ``call`` in real time; returns what was said when."""

    call: Call
    lines: list[Line]
    frame_ms: float = 20.0
    #: Give up (TimeoutError) if the bot does not answer within this.
    max_wait_s: float = 60.0
    #: After the last line, listen until the bot has been quiet this long.
    tail_ms: float = 500.0
    spoken: list[Spoken] = field(default_factory=list)

    def __post_init__(self) -> None:
        fmt = self.call.protocol.input
        self._channels = fmt.channels
        self._rate = fmt.sample_rate
        self._frame_bytes = int(fmt.sample_rate * self.frame_ms / 1000) * 2 * fmt.channels
        self._silence = bytes(self._frame_bytes)
        self._next = 0.0
        self._in_speech = False

    async def play(self) -> list[Spoken]:
        """Say every line, waiting for the bot as a person would; then listen out the call."""
        loop = asyncio.get_running_loop()
        self._next = loop.time()
        record = self.call.record
        base = record.replies_ended
        expected = base  # replies asked for so far
        for index, line in enumerate(self.lines):
            if line.barge_in_after_ms is not None and expected == base:
                await self._listen_for(line.barge_in_after_ms)  # nothing to talk over
            elif line.barge_in_after_ms is not None:
                # The reply started playing -- or ended without a sound (nothing to talk over).
                await self._listen_until(partial(self._started, expected), index)
                starts = record.reply_starts
                began = starts[expected - 1] if len(starts) >= expected else loop.time()
                speak_at = began + line.barge_in_after_ms / 1000
                await self._listen_until(partial(self._at, speak_at), index)
            else:
                await self._listen_until(partial(self._replied, expected), index)
                await self._listen_for(line.pause_ms)
            start = loop.time()
            await self._play(line.audio)
            self.spoken.append(
                Spoken(line.text, start, loop.time(), line.barge_in_after_ms is not None)
            )
            expected += line.expects_reply
        await self._listen_until(partial(self._replied, expected), len(self.lines))
        await self._listen_until(self._quiet, len(self.lines))
        return self.spoken

    def _replied(self, n: int) -> bool:
        return self.call.record.replies_ended >= n

    def _started(self, n: int) -> bool:
        record = self.call.record
        return len(record.reply_starts) >= n or record.replies_ended >= n

    def _at(self, t: float) -> bool:
        return asyncio.get_running_loop().time() >= t

    def _quiet(self) -> bool:
        """The bot has said nothing, and nothing has happened, for ``tail_ms``."""
        call = self.call
        loop = asyncio.get_running_loop()
        idle = loop.time() - call.record.last_activity
        return call.protocol.playout.playing == 0 and idle * 1000 >= self.tail_ms

    async def _send(self, pcm: bytes) -> None:
        speech = _is_speech(np.frombuffer(pcm, dtype="<i2").astype(np.float64))
        if self._in_speech and not speech:
            self.call.mark_speech_end(self._next)  # the end of the last speech frame
        self._in_speech = speech
        await self.call.send_audio(pcm)
