"""Hypothesis strategies for events, shared by the codec property tests.

``EVENTS`` builds valid instances of every built-in kind with arbitrary field
values (within what both wire formats can carry: 64-bit integers, finite
floats); ``unknown_messages`` builds wire maps of kinds nobody registered.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from rspp.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    AudioOut,
    Cancel,
    ClearBuffer,
    Error,
    Event,
    Interrupt,
    LlmDelta,
    LlmDone,
    Metrics,
    Pause,
    PlaybackPosition,
    Resume,
    SessionEnd,
    SessionStart,
    TtsAudio,
    TtsDone,
    TurnCommit,
    TurnConfirm,
    TurnDone,
    TurnInterrupted,
    TurnSpeculate,
    TurnStart,
    UserDtmf,
    UserText,
    VadSpeechEnd,
    VadSpeechStart,
    known_kinds,
)

HEADER_FIELDS = ("session", "turn", "seq", "origin_ns", "inc", "pos")

#: The integer range MessagePack can carry (int64 and uint64).
WIRE_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
#: Header integers: unsigned, 63 bits (docs/abi.md).
HEADER_INTS = st.integers(min_value=0, max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=24)
PCM = st.binary(max_size=1024)


def _header() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "session": TEXT,
        "turn": HEADER_INTS,
        "seq": HEADER_INTS,
        "origin_ns": HEADER_INTS,
        "inc": HEADER_INTS,
        "pos": HEADER_INTS,
    }


def _kind(cls: type[Event], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Event]:
    return st.builds(cls, **_header(), **fields)


def _pcm_kind(cls: type[Event], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Event]:
    return _kind(
        cls,
        pcm=PCM,
        sample_rate=st.integers(min_value=1000, max_value=384_000),
        channels=st.integers(min_value=1, max_value=32),
        **fields,
    )


@st.composite
def _asr_partial(draw: st.DrawFn) -> AsrPartial:
    text = draw(TEXT)
    cut = draw(st.integers(min_value=0, max_value=len(text)))
    header = {name: draw(strategy) for name, strategy in _header().items()}
    return AsrPartial(text=text, stable=text[:cut], **header)


#: One strategy per built-in kind, keyed by kind name.
EVENT_STRATEGIES: dict[str, st.SearchStrategy[Event]] = {
    "audio.in": _pcm_kind(AudioIn),
    "audio.out": _pcm_kind(AudioOut, text=TEXT),
    "tts.audio": _pcm_kind(TtsAudio, text=TEXT),
    "vad.speech_start": _kind(VadSpeechStart),
    "vad.speech_end": _kind(VadSpeechEnd, speech_ms=FLOATS),
    "asr.partial": _asr_partial(),
    "asr.final": _kind(AsrFinal, text=TEXT, confidence=FLOATS),
    "turn.start": _kind(TurnStart),
    "turn.commit": _kind(TurnCommit, text=TEXT),
    "turn.speculate": _kind(TurnSpeculate, text=TEXT),
    "turn.confirm": _kind(TurnConfirm),
    "turn.interrupted": _kind(TurnInterrupted, reason=TEXT, delivered_ms=FLOATS, heard_text=TEXT),
    "turn.done": _kind(TurnDone, delivered_ms=FLOATS),
    "llm.delta": _kind(LlmDelta, text=TEXT),
    "llm.done": _kind(LlmDone, finish_reason=TEXT),
    "tts.done": _kind(TtsDone),
    "control.interrupt": _kind(Interrupt, reason=TEXT),
    "control.clear_buffer": _kind(ClearBuffer),
    "control.cancel": _kind(Cancel, reason=TEXT),
    "control.pause": _kind(Pause, reason=TEXT),
    "playback.position": _kind(
        PlaybackPosition, played_ms=st.floats(min_value=0, allow_nan=False, allow_infinity=False)
    ),
    "control.resume": _kind(Resume, reason=TEXT),
    "user.text": _kind(UserText, text=st.text(min_size=1, max_size=200)),
    "user.dtmf": _kind(
        UserDtmf,
        digit=st.sampled_from("0123456789*#ABCD"),
        duration_ms=FLOATS.filter(lambda x: x >= 0),
    ),
    "session.start": _kind(SessionStart, abi=TEXT, pipeline=TEXT),
    "session.end": _kind(SessionEnd, reason=TEXT),
    "error": _kind(Error, source=TEXT, code=TEXT, message=TEXT),
    "metrics": _kind(Metrics, name=TEXT, values=st.dictionaries(TEXT, FLOATS, max_size=4)),
}

EVENTS: st.SearchStrategy[Event] = st.one_of(*EVENT_STRATEGIES.values())


# --------------------------------------------------------------------------- unknown kinds


def unknown_kind_names() -> st.SearchStrategy[str]:
    """Kind names that no class is registered for."""
    return st.text(min_size=1, max_size=20).filter(lambda name: name not in known_kinds())


def field_values(*, with_bytes: bool) -> st.SearchStrategy[Any]:
    """Values any peer may put in a field: scalars, lists and string-keyed maps.

    JSON has no bytes type (bytes come back as base64 text), so the JSON
    variant leaves them out.
    """
    scalars = st.none() | st.booleans() | WIRE_INTS | FLOATS | TEXT
    if with_bytes:
        scalars = scalars | st.binary(max_size=32)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
        max_leaves=12,
    )


@st.composite
def unknown_messages(draw: st.DrawFn, *, with_bytes: bool) -> dict[str, Any]:
    """A wire map of an unregistered kind, fields in the standard order.

    The order is ``kind``, the six header fields, then the kind's own fields.
    """
    message: dict[str, Any] = {"kind": draw(unknown_kind_names())}
    for name, strategy in _header().items():
        message[name] = draw(strategy)
    names = st.text(max_size=12).filter(lambda n: n != "kind" and n not in HEADER_FIELDS)
    fields = draw(st.dictionaries(names, field_values(with_bytes=with_bytes), max_size=6))
    message.update(fields)
    return message
