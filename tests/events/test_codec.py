"""The wire codecs: round trips, raw audio, unknown kinds, and rejection of garbage."""

from __future__ import annotations

import base64
import typing
from typing import Any

import msgspec
import pytest

import rspp.events
from rspp.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    AudioOut,
    DecodeError,
    Event,
    JsonCodec,
    LlmDelta,
    Metrics,
    MsgpackCodec,
    TtsAudio,
    UnknownEvent,
    known_kinds,
)

HEADER = {
    "session": "sess-42/ü",
    "turn": 2**32 + 7,  # past 32 bits: no silent truncation
    "seq": 123_456,
    "origin_ns": 1_732_000_000_123_456_789,
    "inc": 3,
    "pos": 99,
}
WIRE_ORDER = ["kind", "session", "turn", "seq", "origin_ns", "inc", "pos"]
CODECS = [MsgpackCodec, JsonCodec]
PCM_20MS = bytes(range(256)) * 2 + bytes(range(128))  # 640 bytes, every byte value


def _codec_id(codec_cls: type) -> str:
    return codec_cls.__name__


@pytest.fixture(params=CODECS, ids=_codec_id)
def codec(request: pytest.FixtureRequest) -> MsgpackCodec | JsonCodec:
    return request.param()  # type: ignore[no-any-return]


def _generic(codec: MsgpackCodec | JsonCodec) -> Any:
    return msgspec.msgpack if isinstance(codec, MsgpackCodec) else msgspec.json


def _raw(codec: MsgpackCodec | JsonCodec, data: bytes) -> Any:
    return _generic(codec).decode(data)


def _wire(codec: MsgpackCodec | JsonCodec, obj: Any) -> bytes:
    return _generic(codec).encode(obj)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- every kind


def _sample_value(name: str, tp: Any, index: int) -> Any:
    """A non-default value of type ``tp``, distinct per field so mix-ups show."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if name == "channels":
        return 2
    if tp is bytes:
        return PCM_20MS
    if tp is str:
        return f"{name}: héllo ✓ {index}"
    if tp is bool:
        return True
    if tp is int:
        return 44_100 + index
    if tp is float:
        return 0.25 + index
    if tp == dict[str, float]:
        return {"first_ms": 12.5, "second_ms": -3.0}
    raise TypeError(f"add a sample value for field {name!r} of type {tp!r}")


#: Values that must satisfy a kind's own invariants.
OVERRIDES: dict[str, dict[str, Any]] = {
    "asr.partial": {"text": "hello wor", "stable": "hello "},
    "user.dtmf": {"digit": "#"},
}


def sample_event(cls: type[Event]) -> Event:
    values: dict[str, Any] = {}
    for index, field in enumerate(msgspec.structs.fields(cls)):
        if field.name in HEADER:
            continue
        values[field.name] = _sample_value(field.name, field.type, index)
    values.update(OVERRIDES.get(cls.kind, {}))
    return cls(**HEADER, **values)


def _own_fields(ev: Event) -> dict[str, Any]:
    return {f.name: getattr(ev, f.name) for f in msgspec.structs.fields(ev) if f.name not in HEADER}


@pytest.mark.parametrize("name", sorted(known_kinds()))
def test_every_kind_round_trips_with_header_and_fields(
    name: str, codec: MsgpackCodec | JsonCodec
) -> None:
    cls = known_kinds()[name]
    ev = sample_event(cls)
    # The sample really exercises non-default values.
    for field in msgspec.structs.fields(cls):
        if field.default is not msgspec.NODEFAULT:
            assert getattr(ev, field.name) != field.default, field.name

    data = codec.encode(ev)
    assert isinstance(data, bytes)
    back = codec.decode(data)

    assert type(back) is cls
    assert back == ev
    assert back.kind == name
    for header_name, value in HEADER.items():
        assert getattr(back, header_name) == value
    assert _own_fields(back) == _own_fields(ev)

    raw = _raw(codec, data)
    assert raw["kind"] == name
    assert list(raw)[:7] == WIRE_ORDER
    for header_name, value in HEADER.items():
        assert raw[header_name] == value


@pytest.mark.parametrize("name", sorted(known_kinds()))
def test_module_level_encode_decode_is_msgpack(name: str) -> None:
    ev = sample_event(known_kinds()[name])
    data = rspp.events.encode(ev)
    assert data == MsgpackCodec().encode(ev)
    assert rspp.events.decode(data) == ev


def test_decode_accepts_bytearray_and_memoryview(codec: MsgpackCodec | JsonCodec) -> None:
    ev = AudioIn(pcm=PCM_20MS, **HEADER)
    data = codec.encode(ev)
    assert codec.decode(bytearray(data)) == ev
    assert codec.decode(memoryview(data)) == ev


def test_json_codec_decodes_text() -> None:
    codec = JsonCodec()
    ev = AsrFinal(text="bonjour ✓", confidence=0.5, **HEADER)
    assert codec.decode(codec.encode(ev).decode("utf-8")) == ev


def test_header_extremes_round_trip(codec: MsgpackCodec | JsonCodec) -> None:
    for turn, seq, origin_ns in [(0, 0, 0), (2**63 - 1, 2**63 - 1, 2**63 - 1), (1, 2, 3)]:
        ev = LlmDelta(text="x", session="", turn=turn, seq=seq, origin_ns=origin_ns)
        assert codec.decode(codec.encode(ev)) == ev


def test_header_ints_outside_the_abi_range_are_rejected(codec: MsgpackCodec | JsonCodec) -> None:
    # docs/abi.md: header integers are unsigned and fit in 63 bits.
    for bad in (-1, 2**63, 2**64 - 1):
        for kind in ("llm.delta", "x.future"):
            data = _wire(codec, {"kind": kind, "text": "x", "turn": bad})
            with pytest.raises(DecodeError):
                codec.decode(data)


# --------------------------------------------------------------------------- audio is bytes


@pytest.mark.parametrize("cls", [AudioIn, AudioOut, TtsAudio])
@pytest.mark.parametrize("size", [0, 1, 640, 3200, 70_000])
def test_msgpack_audio_is_raw_bin(cls: type[Event], size: int) -> None:
    pcm = (PCM_20MS * (size // len(PCM_20MS) + 1))[:size]
    ev = cls(pcm=pcm, **HEADER)  # type: ignore[call-arg]
    data = MsgpackCodec().encode(ev)

    raw = msgspec.msgpack.decode(data)
    assert type(raw["pcm"]) is bytes  # a msgpack bin, not str, not a list of samples
    assert raw["pcm"] == pcm
    # No base64 (4/3) or list inflation: the samples plus a small fixed header.
    assert len(pcm) < len(data) <= len(pcm) + 128
    if size:
        # The bytes sit verbatim behind a bin8/16/32 marker.
        if size < 2**8:
            marker = b"\xc4" + size.to_bytes(1, "big")
        elif size < 2**16:
            marker = b"\xc5" + size.to_bytes(2, "big")
        else:
            marker = b"\xc6" + size.to_bytes(4, "big")
        assert marker + pcm in data


def test_json_audio_is_base64_text() -> None:
    ev = AudioIn(pcm=PCM_20MS, sample_rate=8000, **HEADER)
    data = JsonCodec().encode(ev)
    raw = msgspec.json.decode(data)
    assert raw["pcm"] == base64.b64encode(PCM_20MS).decode("ascii")
    back = JsonCodec().decode(data)
    assert type(back.pcm) is bytes  # type: ignore[attr-defined]
    assert back.pcm == PCM_20MS  # type: ignore[attr-defined]
    assert back == ev


def test_json_audio_accepts_base64_from_another_encoder() -> None:
    pcm = b"\x00\x80\xff\x7f" * 10
    wire = {"kind": "audio.in", "pcm": base64.b64encode(pcm).decode()}
    assert JsonCodec().decode(msgspec.json.encode(wire)) == AudioIn(pcm=pcm)


def test_json_audio_rejects_invalid_base64() -> None:
    with pytest.raises(DecodeError):
        JsonCodec().decode(b'{"kind":"audio.in","pcm":"not base64!"}')


# --------------------------------------------------------------------------- unknown kinds

FUTURE_FIELDS: dict[str, Any] = {
    "voice": "alto",
    "gain_db": -3.5,
    "flags": [1, True, None, "x"],
    "nested": {"a": {"b": [1, 2.5]}, "c": ""},
    "big": 2**64 - 1,
}


def _future_message(codec: MsgpackCodec | JsonCodec) -> dict[str, Any]:
    message: dict[str, Any] = {"kind": "x.future", **HEADER, **FUTURE_FIELDS}
    if isinstance(codec, MsgpackCodec):
        message["blob"] = b"\x00\xff\x01"
    return message


def test_unknown_kind_decodes_to_unknown_event(codec: MsgpackCodec | JsonCodec) -> None:
    message = _future_message(codec)
    ev = codec.decode(_wire(codec, message))
    assert type(ev) is UnknownEvent
    assert isinstance(ev, Event)
    assert ev.kind == "x.future"
    for name, value in HEADER.items():
        assert getattr(ev, name) == value
    expected_fields = {k: v for k, v in message.items() if k != "kind" and k not in HEADER}
    assert ev.fields == expected_fields


def test_unknown_kind_re_encodes_byte_identical(codec: MsgpackCodec | JsonCodec) -> None:
    data = _wire(codec, _future_message(codec))
    ev = codec.decode(data)
    assert codec.encode(ev) == data
    assert codec.decode(codec.encode(ev)) == ev


def test_unknown_kind_in_another_order_keeps_its_content(codec: MsgpackCodec | JsonCodec) -> None:
    message = {"zeta": 1, "kind": "x.future", "seq": 5, "alpha": "a", "session": "s"}
    ev = codec.decode(_wire(codec, message))
    assert type(ev) is UnknownEvent
    assert (ev.session, ev.turn, ev.seq, ev.origin_ns) == ("s", 0, 5, 0)
    assert ev.fields == {"zeta": 1, "alpha": "a"}
    again = _raw(codec, codec.encode(ev))
    # Same content; header fields that were absent come back as their zero defaults.
    assert again == {**message, "turn": 0, "origin_ns": 0, "inc": 0, "pos": 0}
    assert list(again)[:7] == WIRE_ORDER


def test_unknown_kind_without_header_gets_defaults(codec: MsgpackCodec | JsonCodec) -> None:
    ev = codec.decode(_wire(codec, {"kind": "x.bare"}))
    assert ev == UnknownEvent(kind="x.bare")
    assert ev.fields == {}  # type: ignore[attr-defined]


def test_unknown_kind_crosses_from_msgpack_to_json() -> None:
    message = {"kind": "x.future", **HEADER, **FUTURE_FIELDS}
    ev = MsgpackCodec().decode(msgspec.msgpack.encode(message))
    json_data = JsonCodec().encode(ev)
    assert msgspec.json.decode(json_data) == message
    assert json_data == msgspec.json.encode(message)
    assert JsonCodec().decode(json_data) == ev


def test_unknown_kind_crosses_from_json_to_msgpack() -> None:
    message = {"kind": "x.future", **HEADER, **FUTURE_FIELDS}
    ev = JsonCodec().decode(msgspec.json.encode(message))
    msgpack_data = MsgpackCodec().encode(ev)
    assert msgpack_data == msgspec.msgpack.encode(message)
    assert MsgpackCodec().decode(msgpack_data) == ev


def test_unknown_event_built_in_code_encodes_flat(codec: MsgpackCodec | JsonCodec) -> None:
    ev = UnknownEvent(kind="x.made", session="s", turn=2, fields={"v": [1, 2]})
    raw = _raw(codec, codec.encode(ev))
    assert raw == {
        "kind": "x.made",
        "session": "s",
        "turn": 2,
        "seq": 0,
        "origin_ns": 0,
        "inc": 0,
        "pos": 0,
        "v": [1, 2],
    }
    assert "fields" not in raw


def test_known_kind_ignores_unknown_fields(codec: MsgpackCodec | JsonCodec) -> None:
    message = {"kind": "asr.final", **HEADER, "text": "hi", "future": {"a": [1]}, "z": None}
    ev = codec.decode(_wire(codec, message))
    assert type(ev) is AsrFinal
    assert ev == AsrFinal(text="hi", **HEADER)


def test_known_kind_with_missing_optional_fields_uses_defaults(
    codec: MsgpackCodec | JsonCodec,
) -> None:
    ev = codec.decode(_wire(codec, {"kind": "metrics", "name": "turn"}))
    assert ev == Metrics(name="turn")


# --------------------------------------------------------------------------- garbage

VALID = [
    AudioIn(pcm=b"\x01\x02\x03\x04", **HEADER),
    AsrPartial(text="hello", stable="he", **HEADER),
    Metrics(name="m", values={"a": 1.0}, **HEADER),
]


def _rejects(codec: MsgpackCodec | JsonCodec, data: bytes | str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert type(info.value) is DecodeError
    return info.value


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)
    assert rspp.events.DecodeError is DecodeError


def test_empty_input_is_rejected(codec: MsgpackCodec | JsonCodec) -> None:
    _rejects(codec, b"")


@pytest.mark.parametrize("ev", VALID, ids=lambda e: e.kind)
def test_every_truncation_is_rejected(codec: MsgpackCodec | JsonCodec, ev: Event) -> None:
    data = codec.encode(ev)
    for end in range(len(data)):
        _rejects(codec, data[:end])


def test_truncated_unknown_kind_is_rejected(codec: MsgpackCodec | JsonCodec) -> None:
    data = _wire(codec, _future_message(codec))
    for end in range(len(data)):
        _rejects(codec, data[:end])


def test_trailing_bytes_are_rejected(codec: MsgpackCodec | JsonCodec) -> None:
    data = codec.encode(VALID[0])
    _rejects(codec, data + data)
    _rejects(codec, data + b"\x00")


@pytest.mark.parametrize(
    "obj",
    [
        [{"kind": "audio.in", "pcm": ""}],
        ["kind", "audio.in"],
        "audio.in",
        42,
        None,
        True,
    ],
    ids=["list-of-map", "list", "str", "int", "nil", "bool"],
)
def test_non_map_is_rejected(codec: MsgpackCodec | JsonCodec, obj: Any) -> None:
    _rejects(codec, _wire(codec, obj))


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"session": "s", "turn": 1, "pcm": ""},
        {"kind": None},
        {"kind": 7},
        {"kind": ["audio.in"]},
        {"kind": {"name": "audio.in"}},
        {"kind": ""},
        {"kind": True},
    ],
    ids=["empty", "no-kind", "nil", "int", "list", "map", "empty-str", "bool"],
)
def test_map_without_a_string_kind_is_rejected(
    codec: MsgpackCodec | JsonCodec, message: dict[str, Any]
) -> None:
    _rejects(codec, _wire(codec, message))


def test_kind_as_msgpack_bin_is_rejected() -> None:
    _rejects(MsgpackCodec(), msgspec.msgpack.encode({"kind": b"audio.in", "pcm": b""}))


PCM_OK = object()


@pytest.mark.parametrize(
    "message",
    [
        {"kind": "audio.in"},  # required pcm missing
        {"kind": "audio.in", "pcm": "text, not bytes"},
        {"kind": "audio.in", "pcm": [0, 1, 2, 3]},  # a list of samples
        {"kind": "audio.in", "pcm": 12},
        {"kind": "audio.in", "pcm": None},
        {"kind": "audio.in", "pcm": PCM_OK, "sample_rate": "16000"},
        {"kind": "audio.in", "pcm": PCM_OK, "sample_rate": 16000.5},
        {"kind": "audio.in", "pcm": PCM_OK, "channels": None},
        {"kind": "llm.delta", "text": "x", "turn": "1"},
        {"kind": "llm.delta", "text": "x", "turn": True},
        {"kind": "llm.delta", "text": "x", "seq": 1.5},
        {"kind": "llm.delta", "text": "x", "origin_ns": None},
        {"kind": "llm.delta", "text": "x", "session": 5},
        {"kind": "llm.delta", "text": 5},
        {"kind": "llm.delta"},
        {"kind": "metrics", "name": "m", "values": {"a": "fast"}},
        {"kind": "metrics", "name": "m", "values": [1.0]},
        {"kind": "asr.final", "text": "x", "confidence": "high"},
    ],
)
def test_known_kind_with_wrong_field_types_is_rejected(
    codec: MsgpackCodec | JsonCodec, message: dict[str, Any]
) -> None:
    if message.get("pcm") is PCM_OK:
        # A valid pcm, so that only the field under test is wrong.
        message = {**message, "pcm": b"" if isinstance(codec, MsgpackCodec) else ""}
        # Without the field under test (the last one) the message is a valid audio.in.
        without = dict(list(message.items())[:-1])
        assert type(codec.decode(_wire(codec, without))) is AudioIn
    error = _rejects(codec, _wire(codec, message))
    assert message["kind"] in str(error)


def test_msgpack_pcm_as_str_is_rejected() -> None:
    # In MessagePack audio must be bin; a str (even of the right length) is not accepted.
    message = {"kind": "audio.in", "pcm": "\x00\x01\x02\x03"}
    _rejects(MsgpackCodec(), msgspec.msgpack.encode(message))


@pytest.mark.parametrize(
    "header",
    [
        {"turn": True},
        {"turn": False},
        {"turn": "1"},
        {"seq": 1.0},
        {"origin_ns": None},
        {"origin_ns": [1]},
        {"session": 5},
        {"session": None},
    ],
    ids=lambda h: f"{next(iter(h))}={next(iter(h.values()))!r}",
)
def test_unknown_kind_with_wrong_header_types_is_rejected(
    codec: MsgpackCodec | JsonCodec, header: dict[str, Any]
) -> None:
    _rejects(codec, _wire(codec, {"kind": "x.future", **header, "extra": 1}))


def test_asr_partial_stable_not_a_prefix_is_rejected(codec: MsgpackCodec | JsonCodec) -> None:
    good = {"kind": "asr.partial", "text": "hello world", "stable": "hello"}
    assert codec.decode(_wire(codec, good)) == AsrPartial(text="hello world", stable="hello")
    _rejects(codec, _wire(codec, {**good, "stable": "help"}))
    _rejects(codec, _wire(codec, {**good, "text": "", "stable": "x"}))


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind":"asr.final","text":"\xff\xfe"}',
        b'{"kind":"x.future","note":"\xff\xfe"}',
        b'{"kind":"x.future","session":"\xc3\x28"}',
        b'{"kind":"\xff"}',
        b'\xff{"kind":"x.future"}',
    ],
    ids=["known-kind", "unknown-kind-field", "unknown-kind-header", "in-kind", "outside"],
)
def test_json_non_utf8_is_rejected(data: bytes) -> None:
    _rejects(JsonCodec(), data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\xa4kind\xa9asr.final\xa4text\xa2\xff\xfe",
        b"\x82\xa4kind\xa8x.future\xa4note\xa2\xff\xfe",
        b"\x82\xa4kind\xa8x.future\xa7session\xa2\xc3\x28",
    ],
    ids=["known-kind", "unknown-kind-field", "unknown-kind-header"],
)
def test_msgpack_non_utf8_str_is_rejected(data: bytes) -> None:
    _rejects(MsgpackCodec(), data)


def test_json_surrogates_in_text_input_are_rejected() -> None:
    _rejects(JsonCodec(), '{"kind":"x.future","note":"\udc80"}')
    _rejects(JsonCodec(), '{"kind":"asr.final","text":"\udc80"}')


@pytest.mark.parametrize("kind", ["llm.delta", "x.future"])
def test_json_header_ints_beyond_64_bits_are_rejected(kind: str) -> None:
    # MessagePack cannot carry these, so an event holding one could not be forwarded.
    codec = JsonCodec()
    for header_name in ("turn", "seq", "origin_ns"):
        # The edges of the header range are fine ...
        for edge in ("0", str(2**63 - 1)):
            data = f'{{"kind":"{kind}","text":"x","{header_name}":{edge}}}'.encode()
            assert getattr(codec.decode(data), header_name) == int(edge)
        # ... one past them, or far past them, is not.
        for value in (str(2**64), "-1", "1" + "0" * 30, "1" + "0" * 400):
            data = f'{{"kind":"{kind}","text":"x","{header_name}":{value}}}'.encode()
            with pytest.raises(DecodeError):
                codec.decode(data)


def test_json_int_field_beyond_64_bits_is_rejected() -> None:
    _rejects(JsonCodec(), b'{"kind":"audio.in","pcm":"","sample_rate":' + b"9" * 40 + b"}")


def test_json_float_out_of_range_is_rejected() -> None:
    _rejects(JsonCodec(), b'{"kind":"asr.final","text":"x","confidence":1e999}')
    _rejects(JsonCodec(), b'{"kind":"x.future","v":1e999}')


def test_msgpack_header_ints_keep_their_63_bit_range() -> None:
    codec = MsgpackCodec()
    data = msgspec.msgpack.encode({"kind": "llm.delta", "text": "x", "turn": 2**63 - 1})
    assert codec.decode(data) == LlmDelta(text="x", turn=2**63 - 1)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_input_is_rejected(codec: MsgpackCodec | JsonCodec, depth: int) -> None:
    if isinstance(codec, MsgpackCodec):
        nested = b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]
        inside_unknown = b"\x82\xa4kind\xa8x.future\xa1v" + nested
        inside_known = b"\x83\xa4kind\xa8audio.in\xa3pcm\xc4\x00\xa1v" + nested
    else:
        nested = b"[" * depth + b"]" * depth
        inside_unknown = b'{"kind":"x.future","v":' + nested + b"}"
        inside_known = b'{"kind":"audio.in","pcm":"","v":' + nested + b"}"
    _rejects(codec, nested)
    _rejects(codec, inside_unknown)
    _rejects(codec, inside_known)


def test_modest_nesting_in_unknown_fields_passes_through(codec: MsgpackCodec | JsonCodec) -> None:
    value: Any = None
    for _ in range(50):
        value = [value]
    ev = codec.decode(_wire(codec, {"kind": "x.future", "v": value}))
    assert ev.fields == {"v": value}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\xa4kind\xa8x.future\xc0\x01",  # nil key
        b"\x82\xa4kind\xa8x.future\x01\x01",  # int key
        b"\x82\xa4kind\xa8x.future\xc4\x01a\x01",  # bin key
    ],
    ids=["nil-key", "int-key", "bin-key"],
)
def test_msgpack_non_string_field_names_are_rejected(data: bytes) -> None:
    # Fields are named by strings (UnknownEvent.fields is dict[str, Any]); a map
    # keyed by anything else is not an event of this ABI and could not be
    # forwarded to a JSON peer.
    _rejects(MsgpackCodec(), data)


def test_generic_msgspec_errors_do_not_leak(codec: MsgpackCodec | JsonCodec) -> None:
    for data in (b"\xc1", b"{", b"\x00" * 3, b"null"):
        with pytest.raises(DecodeError):
            codec.decode(data)


def test_llm_delta_text_is_required(codec: MsgpackCodec | JsonCodec) -> None:
    error = _rejects(codec, _wire(codec, {"kind": "llm.delta"}))
    assert "text" in str(error)
