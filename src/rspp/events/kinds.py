"""The built-in event kinds of ABI 1.x.

Each class is one kind; ``docs/abi.md`` is the normative description (fields,
units, lanes, ordering). Keep the two in step.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from rspp.events.base import Event, Lane, register

__all__ = [
    "AsrFinal",
    "AsrPartial",
    "AudioIn",
    "AudioOut",
    "Cancel",
    "ClearBuffer",
    "Error",
    "Interrupt",
    "LlmDelta",
    "LlmDone",
    "Metrics",
    "Pause",
    "PlaybackPosition",
    "Resume",
    "SessionEnd",
    "SessionStart",
    "TtsAudio",
    "TtsDone",
    "TurnCommit",
    "TurnConfirm",
    "TurnDone",
    "TurnInterrupted",
    "TurnSpeculate",
    "TurnStart",
    "UserDtmf",
    "UserText",
    "VadSpeechEnd",
    "VadSpeechStart",
]

# --------------------------------------------------------------------------- audio


SampleRate = Annotated[int, msgspec.Meta(ge=1000, le=384_000)]
Channels = Annotated[int, msgspec.Meta(ge=1, le=32)]


class _Pcm(Event, kw_only=True):
    """Interleaved little-endian signed 16-bit PCM."""

    pcm: bytes
    sample_rate: SampleRate = 16000
    channels: Channels = 1

    @property
    def samples(self) -> int:
        """Samples per channel in this chunk."""
        return len(self.pcm) // (2 * self.channels)

    @property
    def duration_ns(self) -> int:
        """Duration of this chunk in nanoseconds."""
        return len(self.pcm) * 1_000_000_000 // (2 * self.channels * self.sample_rate)


@register
class AudioIn(_Pcm, tag="audio.in"):
    """User audio entering the session.

    A full inbox drops the oldest: real time beats completeness.
    """

    fenced: ClassVar[bool] = False
    overload: ClassVar[str] = "drop_oldest"


@register
class AudioOut(_Pcm, tag="audio.out"):
    """Bot audio leaving the session towards the client, one playout frame.

    ``text`` is the part of the reply this frame voices (may be empty); the
    kernel uses it to record what the user actually heard.
    """

    milestone: ClassVar[bool] = True
    text: str = ""


@register
class UserText(Event, tag="user.text", kw_only=True):
    """A typed user turn (a chat box, a test): answered like a spoken one.

    The turn manager treats it as a complete utterance with its final
    transcript: it ends the user's turn at once (interrupting a reply in
    progress, as the user talking over the bot would).
    """

    fenced: ClassVar[bool] = False
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


@register
class UserDtmf(Event, tag="user.dtmf", kw_only=True):
    """A key the caller pressed on a phone keypad (telephony transports)."""

    fenced: ClassVar[bool] = False
    digit: Annotated[str, msgspec.Meta(pattern="^[0-9*#A-D]$")]
    #: How long the key was held, when the transport knows (ms).
    duration_ms: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0


# --------------------------------------------------------------------------- vad


@register
class VadSpeechStart(Event, tag="vad.speech_start", kw_only=True):
    """The user started speaking. ``origin_ns`` is the time of the first voiced frame."""

    fenced: ClassVar[bool] = False


@register
class VadSpeechEnd(Event, tag="vad.speech_end", kw_only=True):
    """The user stopped speaking.

    ``origin_ns`` is the time speech ended, not when the end was detected.
    """

    fenced: ClassVar[bool] = False
    milestone: ClassVar[bool] = True
    #: Duration of the speech segment that just ended, in milliseconds.
    speech_ms: float = 0.0


# --------------------------------------------------------------------------- asr


@register
class AsrPartial(Event, tag="asr.partial", kw_only=True):
    """An interim transcript. ``stable`` is a prefix of ``text`` that will not change."""

    fenced: ClassVar[bool] = False
    overload: ClassVar[str] = "latest"
    text: str
    stable: str = ""

    def __post_init__(self) -> None:
        if not self.text.startswith(self.stable):
            raise ValueError("asr.partial: `stable` must be a prefix of `text`")


@register
class AsrFinal(Event, tag="asr.final", kw_only=True):
    """The final transcript of one user utterance."""

    fenced: ClassVar[bool] = False
    milestone: ClassVar[bool] = True
    text: str
    confidence: float = 1.0


# --------------------------------------------------------------------------- turn


@register
class TurnStart(Event, tag="turn.start", kw_only=True):
    """A user turn began (speech detected in a new turn)."""

    fenced: ClassVar[bool] = False


@register
class TurnCommit(Event, tag="turn.commit", kw_only=True):
    """The user's turn ended: the bot replies to ``text``. The root of a reply; fenced.

    The kernel gives it (and so the whole reply) the session's current turn number.
    """

    milestone: ClassVar[bool] = True
    text: str = ""


@register
class TurnSpeculate(Event, tag="turn.speculate", kw_only=True):
    """Start a reply to ``text`` before the user's turn has ended, held back until confirmed.

    The root of a speculative reply; the kernel gives it a turn number of its own.
    Nothing of that reply reaches the client unless a ``turn.confirm`` releases it.
    """

    milestone: ClassVar[bool] = True
    text: str = ""


@register
class TurnConfirm(Event, tag="turn.confirm", kw_only=True):
    """The speculative reply ``turn`` is the reply to the user's turn: release it."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    public: ClassVar[bool] = False


@register
class TurnInterrupted(Event, tag="turn.interrupted", kw_only=True):
    """The kernel accepted an interruption of ``turn``'s reply.

    ``delivered_ms`` and ``heard_text`` describe what of the reply reached the
    client before the interruption, so context can be truncated to what was heard.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    reason: str = "barge_in"
    delivered_ms: float = 0.0
    heard_text: str = ""


@register
class TurnDone(Event, tag="turn.done", kw_only=True):
    """The reply of ``turn`` has been played out completely."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    delivered_ms: float = 0.0


# --------------------------------------------------------------------------- llm


@register
class LlmDelta(Event, tag="llm.delta", kw_only=True):
    """A piece of streamed reply text."""

    milestone: ClassVar[bool] = True
    text: str


@register
class LlmDone(Event, tag="llm.done", kw_only=True):
    """The reply text of this turn is complete."""

    finish_reason: str = "stop"


# --------------------------------------------------------------------------- tts


@register
class TtsAudio(_Pcm, tag="tts.audio"):
    """A chunk of synthesized reply audio. ``text`` is the part of the reply it voices."""

    milestone: ClassVar[bool] = True
    text: str = ""


@register
class TtsDone(Event, tag="tts.done", kw_only=True):
    """All reply audio of this turn has been synthesized."""


# --------------------------------------------------------------------------- control


@register
class Interrupt(Event, tag="control.interrupt", kw_only=True):
    """A request (usually from the VAD) to interrupt the reply being spoken.

    The kernel decides whether to accept it; see ``docs/abi.md``.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    client: ClassVar[bool] = True
    reason: str = "barge_in"


@register
class ClearBuffer(Event, tag="control.clear_buffer", kw_only=True):
    """Drop all buffered output audio of turns ``<= turn`` now."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    client: ClassVar[bool] = True


@register
class Pause(Event, tag="control.pause", kw_only=True):
    """Stop releasing output audio for now, keeping it buffered (an undecided interruption)."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    reason: str = ""


@register
class Resume(Event, tag="control.resume", kw_only=True):
    """Release output audio again, from where it paused."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    reason: str = ""


@register
class PlaybackPosition(Event, tag="playback.position", kw_only=True):
    """How much of reply ``turn``'s audio the client has actually played (a report).

    Sent by a client (through its transport) as it plays; "heard" means played:
    the kernel's record of what the user heard, and so the conversation's cut
    on an interruption, follow these reports when a client sends them.
    """

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    public: ClassVar[bool] = False
    client: ClassVar[bool] = True
    #: Milliseconds of the turn's audio played so far (a total, not an increment).
    played_ms: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0


@register
class Cancel(Event, tag="control.cancel", kw_only=True):
    """Cancel the reply of ``turn`` (and older): fence it, clear it, stop generating it."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    client: ClassVar[bool] = True
    reason: str = "cancel"


# --------------------------------------------------------------------------- session


@register
class SessionStart(Event, tag="session.start", kw_only=True):
    """A session began. Carries the ABI version the sender speaks."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    abi: str = ""
    pipeline: str = ""


@register
class SessionEnd(Event, tag="session.end", kw_only=True):
    """A session ended."""

    lane: ClassVar[Lane] = Lane.CONTROL
    fenced: ClassVar[bool] = False
    reason: str = "closed"


# --------------------------------------------------------------------------- diagnostics


@register
class Error(Event, tag="error", kw_only=True):
    """Something failed without ending the session (a node raised, input was rejected)."""

    fenced: ClassVar[bool] = False
    source: str = ""
    code: str = ""
    message: str = ""


@register
class Metrics(Event, tag="metrics", kw_only=True):
    """Named measurements, e.g. a turn's latency breakdown (values in the units the name says)."""

    fenced: ClassVar[bool] = False
    name: str
    values: dict[str, float] = msgspec.field(default_factory=dict)
