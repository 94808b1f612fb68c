"""A scripted caller: plays user utterances into a session as a real-time audio stream.

It sends one frame every ``frame_ms`` for the whole call -- silence while it
listens, speech-like audio while it talks -- exactly like a microphone behind
a transport, so the VAD sees real pauses. Each utterance waits for the bot:
normally until the replies it expects so far have been played out (then a
pause), or, for a barge-in, until the latest expected reply has *started* and
then a set delay, so the caller talks over the bot (a backchannel is a
barge-in that expects no reply).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from rspp.events import AudioIn
from rspp.kernel.session import Session
from rspp.testing.audio import silence, speech_like
from rspp.testing.sinks import RecordingSink

__all__ = ["ScriptedCaller", "Spoken", "Utterance"]


@dataclass(frozen=True)
class Utterance:
    """One thing the caller says."""

    text: str
    #: How long it takes to say (default: ``ms_per_word`` per word).
    duration_ms: float | None = None
    #: Silence before speaking, once it is the caller's turn.
    pause_ms: float = 400.0
    #: Barge in: start this long after the bot's latest reply started playing.
    barge_in_after_ms: float | None = None
    #: Whether the bot should answer it (False for a backchannel like "uh-huh").
    expects_reply: bool = True
    #: Hesitate after this many words ("I would like to ... book a table"), then go on.
    hesitate_after_words: int | None = None
    #: How long the hesitation lasts.
    hesitation_ms: float = 350.0
    #: Recorded speech to play (PCM16 mono at the session's rate); None: speech-like noise.
    audio: bytes | None = field(default=None, repr=False)


@dataclass
class Spoken:
    """When an utterance was actually spoken (session clock, ns)."""

    text: str
    start_ns: int
    end_ns: int
    barge_in: bool = False


class RealTimeMic:
    """A microphone in real time: one frame every ``frame_ms``, silence between lines.

    The pacing both scripted callers share (this one, into a session; and
    :class:`rspp.client.Caller`, over the network). A subclass sets ``frame_ms``,
    ``max_wait_s``, ``_silence`` (one frame of it), ``_frame_bytes`` and ``_next``
    (the loop time the next frame is due), and sends a frame in :meth:`_send`.
    """

    frame_ms: float
    max_wait_s: float
    _silence: bytes
    _frame_bytes: int
    _next: float
    #: How a timeout names the caller and what it waited to say.
    _who = "caller"
    _item = "line"

    async def _send(self, pcm: bytes) -> None:
        raise NotImplementedError

    async def _frame(self, pcm: bytes) -> None:
        await self._send(pcm)
        loop = asyncio.get_running_loop()
        self._next += self.frame_ms / 1000
        await asyncio.sleep(max(0.0, self._next - loop.time()))

    async def _listen_for(self, ms: float) -> None:
        for _ in range(round(ms / self.frame_ms)):
            await self._frame(self._silence)

    async def _listen_until(self, ready: Callable[..., bool], index: int) -> None:
        frames = 0
        limit = self.max_wait_s * 1000 / self.frame_ms
        while not ready():
            if frames > limit:
                raise TimeoutError(
                    f"{self._who}: no reply before {self._item} {index} within {self.max_wait_s} s"
                )
            await self._frame(self._silence)
            frames += 1

    async def _play(self, pcm: bytes) -> None:
        step = self._frame_bytes
        if len(pcm) % step:  # the last frame is padded with silence, not cut
            pcm += bytes(step - len(pcm) % step)
        for offset in range(0, len(pcm), step):
            await self._frame(pcm[offset : offset + step])


@dataclass
class ScriptedCaller(RealTimeMic):
    """Plays ``script`` into ``session``; ``sink`` is where the bot's replies arrive."""

    _who = "scripted caller"
    _item = "utterance"

    session: Session
    sink: RecordingSink
    script: list[Utterance]
    frame_ms: float = 20.0
    ms_per_word: float = 330.0
    level_db: float = -20.0
    #: Give up (TimeoutError) if the bot does not answer within this.
    max_wait_s: float = 60.0
    #: Silence after the last reply before the call ends.
    tail_ms: float = 500.0
    #: Replies that reached ``sink`` before this caller joined (a call carried on after a
    #: move): they do not answer this caller's lines.
    replies_before: int = 0
    spoken: list[Spoken] = field(default_factory=list)

    def __post_init__(self) -> None:
        rate = self.session.pipeline.spec.audio.sample_rate
        self._rate = rate
        self._silence = silence(self.frame_ms, rate)
        self._frame_bytes = len(self._silence)
        self._next = 0.0

    async def play(self) -> list[Spoken]:
        """Play the whole script; returns what was spoken when."""
        self._next = asyncio.get_running_loop().time()
        base = self.replies_before
        expected = base  # replies the caller has asked for so far (and those before it)
        for index, utterance in enumerate(self.script):
            if utterance.barge_in_after_ms is not None and expected == base:
                await self._listen_for(utterance.barge_in_after_ms)  # nothing to talk over
            elif utterance.barge_in_after_ms is not None:
                starts = self.sink.reply_starts
                # The reply started playing -- or ended without a sound (then there is
                # nothing to talk over, and the caller just speaks after the delay).
                await self._listen_until(
                    lambda n=expected, s=starts: len(s) >= n or self.sink.replies_ended >= n,
                    index,
                )
                began = starts[expected - 1] if len(starts) >= expected else self.session.now_ns()
                speak_at = began + utterance.barge_in_after_ms * 1e6
                await self._listen_until(lambda t=speak_at: self.session.now_ns() >= t, index)
            else:
                await self._listen_until(lambda n=expected: self.sink.replies_ended >= n, index)
                await self._listen_for(utterance.pause_ms)
            await self._say(utterance, seed=index)
            expected += utterance.expects_reply
        await self._listen_until(lambda: self.sink.replies_ended >= expected, len(self.script))
        await self._listen_for(self.tail_ms)
        return self.spoken

    async def _send(self, pcm: bytes) -> None:
        self.session.push(AudioIn(pcm=pcm, sample_rate=self._rate))

    async def _say(self, utterance: Utterance, seed: int) -> None:
        if utterance.audio is not None:
            start = self.session.now_ns()
            await self._play(utterance.audio)
            self.spoken.append(
                Spoken(
                    utterance.text,
                    start,
                    self.session.now_ns(),
                    barge_in=utterance.barge_in_after_ms is not None,
                )
            )
            return
        words = len(utterance.text.split())
        duration = utterance.duration_ms
        if duration is None:
            duration = max(300.0, words * self.ms_per_word)
        parts = [duration]
        if utterance.hesitate_after_words:
            first = duration * utterance.hesitate_after_words / words
            parts = [first, duration - first]
        start = self.session.now_ns()
        for i, part_ms in enumerate(parts):
            if i:
                await self._listen_for(utterance.hesitation_ms)
            await self._speak(part_ms, seed * 7 + i)
        self.spoken.append(
            Spoken(
                utterance.text,
                start,
                self.session.now_ns(),
                barge_in=utterance.barge_in_after_ms is not None,
            )
        )

    async def _speak(self, duration_ms: float, seed: int) -> None:
        await self._play(speech_like(duration_ms, self._rate, level_db=self.level_db, seed=seed))
