"""The kinds of ABI 1.x: tags, class-level facts, and the kind registry."""

from __future__ import annotations

import re
import uuid

import msgspec
import pytest

import rspp.events
from rspp.events import (
    ABI_VERSION,
    AsrFinal,
    AsrPartial,
    AudioIn,
    AudioOut,
    Cancel,
    ClearBuffer,
    Event,
    Interrupt,
    JsonCodec,
    Lane,
    LlmDelta,
    MsgpackCodec,
    SessionEnd,
    SessionStart,
    TtsAudio,
    TurnCommit,
    TurnDone,
    TurnInterrupted,
    UnknownEvent,
    VadSpeechEnd,
    kind_of,
    known_kinds,
    register,
)

from .strategies import EVENT_STRATEGIES

BUILTIN_KINDS = {
    "user.text",
    "user.dtmf",
    "audio.in",
    "audio.out",
    "vad.speech_start",
    "vad.speech_end",
    "asr.partial",
    "asr.final",
    "turn.start",
    "turn.commit",
    "turn.interrupted",
    "turn.done",
    "llm.delta",
    "llm.done",
    "tts.audio",
    "tts.done",
    "control.interrupt",
    "control.clear_buffer",
    "control.cancel",
    "session.start",
    "session.end",
    "error",
    "metrics",
}


def _unique_tag(label: str) -> str:
    return f"test.events.{label}.{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- version


def test_abi_version_is_major_dot_minor() -> None:
    assert isinstance(ABI_VERSION, str)
    match = re.fullmatch(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", ABI_VERSION)
    assert match is not None, ABI_VERSION
    assert int(match.group(1)) >= 1


# --------------------------------------------------------------------------- registry


def test_every_builtin_kind_is_registered() -> None:
    registered = known_kinds()
    missing = BUILTIN_KINDS - registered.keys()
    assert not missing
    for name in BUILTIN_KINDS:
        assert kind_of(name) is registered[name]


def test_fuzz_strategies_cover_every_builtin_kind() -> None:
    # Guards the property tests: a new built-in kind must get a strategy too.
    builtin = {name for name, cls in known_kinds().items() if cls.__module__ == "rspp.events.kinds"}
    assert set(EVENT_STRATEGIES) == builtin


@pytest.mark.parametrize("name", sorted(BUILTIN_KINDS))
def test_kind_name_is_the_tag_on_class_and_instance(name: str) -> None:
    cls = known_kinds()[name]
    assert issubclass(cls, Event)
    assert cls.__struct_config__.tag == name
    assert cls.__struct_config__.tag_field == "kind"
    assert cls.kind == name
    # Exported under its class name from the package.
    assert getattr(rspp.events, cls.__name__) is cls


def test_instance_kind_equals_tag() -> None:
    assert AudioIn(pcm=b"").kind == "audio.in"
    assert AsrPartial(text="a").kind == "asr.partial"
    assert Interrupt().kind == "control.interrupt"


def test_kind_of_unknown_name_is_none() -> None:
    assert kind_of("x.future") is None
    assert kind_of("") is None


def test_known_kinds_returns_a_copy() -> None:
    kinds = known_kinds()
    kinds["audio.in"] = TurnCommit
    kinds["test.events.injected"] = AudioIn
    assert kind_of("audio.in") is AudioIn
    assert kind_of("test.events.injected") is None


def test_kinds_are_distinct_classes() -> None:
    kinds = known_kinds()
    assert len(set(kinds.values())) == len(kinds)


# --------------------------------------------------------------------------- class-level facts


def test_audio_in_is_data_unfenced_and_drops_oldest() -> None:
    assert AudioIn.lane is Lane.DATA
    assert AudioIn.fenced is False
    assert AudioIn.overload == "drop_oldest"


def test_asr_partial_overload_keeps_latest() -> None:
    assert AsrPartial.overload == "latest"
    assert AsrPartial.lane is Lane.DATA
    assert AsrPartial.fenced is False


@pytest.mark.parametrize("cls", [LlmDelta, TtsAudio, AudioOut, TurnCommit])
def test_bot_output_is_fenced(cls: type[Event]) -> None:
    assert cls.fenced is True
    assert cls.lane is Lane.DATA


@pytest.mark.parametrize("cls", [AudioIn, AsrPartial, AsrFinal, VadSpeechEnd])
def test_what_the_user_said_is_not_fenced(cls: type[Event]) -> None:
    assert cls.fenced is False


@pytest.mark.parametrize(
    "cls",
    [Interrupt, ClearBuffer, Cancel, SessionStart, SessionEnd, TurnInterrupted, TurnDone],
)
def test_control_kinds_travel_on_the_control_lane(cls: type[Event]) -> None:
    assert cls.lane is Lane.CONTROL


@pytest.mark.parametrize("cls", [AudioIn, AudioOut, TtsAudio, LlmDelta, AsrPartial, AsrFinal])
def test_data_kinds_travel_on_the_data_lane(cls: type[Event]) -> None:
    assert cls.lane is Lane.DATA


def test_lane_values() -> None:
    assert Lane.DATA == 0
    assert Lane.CONTROL == 1


@pytest.mark.parametrize("cls", [AsrFinal, VadSpeechEnd, LlmDelta, TtsAudio, AudioOut])
def test_latency_milestones(cls: type[Event]) -> None:
    assert cls.milestone is True


@pytest.mark.parametrize("cls", [AudioIn, AsrPartial, Interrupt])
def test_non_milestones(cls: type[Event]) -> None:
    assert cls.milestone is False


@pytest.mark.parametrize("name", sorted(BUILTIN_KINDS))
def test_class_facts_have_documented_types(name: str) -> None:
    cls = known_kinds()[name]
    assert isinstance(cls.lane, Lane)
    assert isinstance(cls.fenced, bool)
    assert isinstance(cls.milestone, bool)
    assert cls.overload in {"block", "drop_oldest", "drop_newest", "latest"}


def test_class_facts_are_not_wire_fields() -> None:
    raw = msgspec.msgpack.decode(MsgpackCodec().encode(AudioIn(pcm=b"\x00\x00")))
    assert not {"lane", "fenced", "milestone", "overload"} & raw.keys()


# --------------------------------------------------------------------------- kind behaviour


def test_asr_partial_stable_must_be_a_prefix_of_text() -> None:
    assert AsrPartial(text="hello world", stable="hello ").stable == "hello "
    assert AsrPartial(text="hello", stable="hello").stable == "hello"
    assert AsrPartial(text="hello").stable == ""
    with pytest.raises(ValueError, match="prefix"):
        AsrPartial(text="hello world", stable="help")
    with pytest.raises(ValueError, match="prefix"):
        AsrPartial(text="", stable="x")


def test_pcm_samples_and_duration() -> None:
    mono = AudioIn(pcm=b"\x00\x00" * 320, sample_rate=16_000, channels=1)
    assert mono.samples == 320
    assert mono.duration_ns == 20_000_000
    stereo = TtsAudio(pcm=b"\x00\x00" * 960, sample_rate=48_000, channels=2)
    assert stereo.samples == 480
    assert stereo.duration_ns == 10_000_000


def test_header_defaults_are_zero() -> None:
    ev = LlmDelta(text="hi")
    assert (ev.session, ev.turn, ev.seq, ev.origin_ns) == ("", 0, 0, 0)


# --------------------------------------------------------------------------- register


def test_register_makes_a_user_kind_known() -> None:
    tag = _unique_tag("my_kind")

    class MyKind(Event, tag=tag, kw_only=True):
        note: str = ""

    assert register(MyKind) is MyKind
    assert MyKind.kind == tag
    assert kind_of(tag) is MyKind
    assert known_kinds()[tag] is MyKind
    assert MyKind(note="x").kind == tag


def test_registering_the_same_class_twice_is_harmless() -> None:
    tag = _unique_tag("twice")

    class Twice(Event, tag=tag, kw_only=True):
        n: int = 0

    register(Twice)
    register(Twice)
    assert kind_of(tag) is Twice


def test_codecs_built_before_register_decode_the_new_kind() -> None:
    tag = _unique_tag("late")
    msgpack_codec, json_codec = MsgpackCodec(), JsonCodec()
    header = {"kind": tag, "session": "s-late", "turn": 3, "seq": 11, "origin_ns": 99}
    mp_wire = msgspec.msgpack.encode({**header, "payload": b"\x00\xff\x10", "count": 5})
    js_wire = msgspec.json.encode({**header, "payload": "AP8Q", "count": 5})  # base64 of payload

    # Warm both codecs (and the module-level one) while the kind is still unknown.
    for codec, wire in ((msgpack_codec, mp_wire), (json_codec, js_wire)):
        before = codec.decode(wire)
        assert type(before) is UnknownEvent
        assert before.kind == tag
    assert type(rspp.events.decode(mp_wire)) is UnknownEvent

    class LateKind(Event, tag=tag, kw_only=True):
        payload: bytes
        count: int = 0

    register(LateKind)
    expected = LateKind(
        session="s-late", turn=3, seq=11, origin_ns=99, payload=b"\x00\xff\x10", count=5
    )
    assert msgpack_codec.decode(mp_wire) == expected
    assert type(msgpack_codec.decode(mp_wire)) is LateKind
    assert json_codec.decode(js_wire) == expected
    assert type(json_codec.decode(js_wire)) is LateKind
    assert rspp.events.decode(mp_wire) == expected
    # And the new kind round-trips through the old codecs.
    assert msgpack_codec.decode(msgpack_codec.encode(expected)) == expected
    assert json_codec.decode(json_codec.encode(expected)) == expected


def test_a_registered_user_kind_is_validated_like_a_builtin() -> None:
    tag = _unique_tag("strict")

    class Strict(Event, tag=tag, kw_only=True):
        count: int

    register(Strict)
    codec = MsgpackCodec()
    bad = msgspec.msgpack.encode({"kind": tag, "count": "seven"})
    with pytest.raises(rspp.events.DecodeError):
        codec.decode(bad)


def test_registering_another_class_under_a_taken_tag_is_refused() -> None:
    class Impostor(Event, tag="audio.in", kw_only=True):
        pcm: str = ""

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert kind_of("audio.in") is AudioIn
    # The codec still decodes audio.in as the real kind.
    ev = AudioIn(pcm=b"\x01\x02")
    assert type(MsgpackCodec().decode(MsgpackCodec().encode(ev))) is AudioIn


def test_registering_another_class_under_a_user_tag_is_refused() -> None:
    tag = _unique_tag("taken")

    class First(Event, tag=tag, kw_only=True):
        pass

    class Second(Event, tag=tag, kw_only=True):
        pass

    register(First)
    with pytest.raises(ValueError):
        register(Second)
    assert kind_of(tag) is First


@pytest.mark.parametrize("bad_tag", [False, 123])
def test_registering_a_class_without_a_string_tag_is_a_type_error(bad_tag: object) -> None:
    before = known_kinds()

    class NoTag(Event, tag=bad_tag, kw_only=True):  # type: ignore[call-arg]
        x: int = 0

    with pytest.raises(TypeError):
        register(NoTag)
    assert known_kinds() == before


def test_unknown_event_itself_cannot_be_registered() -> None:
    with pytest.raises(TypeError):
        register(UnknownEvent)
