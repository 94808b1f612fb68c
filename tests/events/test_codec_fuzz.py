"""Property tests: the codecs round-trip every valid event and reject garbage cleanly.

"Cleanly" means the one documented error, :class:`rspp.events.DecodeError`; a
transport catches that and nothing else, so any other exception escaping a
decode is a crash waiting for a hostile or broken peer.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rspp.events import DecodeError, Event, JsonCodec, MsgpackCodec, UnknownEvent, known_kinds

from .strategies import EVENTS, field_values, unknown_messages

MSGPACK = MsgpackCodec()
JSON = JsonCodec()

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=200, deadline=None)


def _decode_or_reject(codec: MsgpackCodec | JsonCodec, data: bytes | str) -> Event | None:
    """Decode ``data``; DecodeError is the only acceptable failure."""
    try:
        ev = codec.decode(data)
    except DecodeError:
        return None
    assert isinstance(ev, Event)
    if isinstance(ev, UnknownEvent):
        assert isinstance(ev.kind, str)
        assert ev.kind
        assert ev.kind not in known_kinds()
    else:
        assert type(ev) is known_kinds()[ev.kind]
    return ev


def _forwardable(codec: MsgpackCodec | JsonCodec, ev: Event) -> None:
    """Whatever decodes can be sent on with the same codec and decodes to the same kind."""
    again = codec.decode(codec.encode(ev))
    assert type(again) is type(ev)
    assert again.kind == ev.kind
    assert (again.session, again.turn, again.seq, again.origin_ns) == (
        ev.session,
        ev.turn,
        ev.seq,
        ev.origin_ns,
    )


# --------------------------------------------------------------------------- random input


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_msgpack(data: bytes) -> None:
    _decode_or_reject(MSGPACK, data)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_json(data: bytes) -> None:
    _decode_or_reject(JSON, data)


@FUZZ
@given(st.text(max_size=128))
def test_random_text_json(data: str) -> None:
    _decode_or_reject(JSON, data)


JSON_TOKENS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"kind"',
        '"audio.in"',
        '"asr.partial"',
        '"x.future"',
        '"pcm"',
        '"text"',
        '"stable"',
        '"turn"',
        '"session"',
        '"AAEC"',
        '"\\u00e9"',
        '"\\ud800"',
        "0",
        "-1",
        "1e999",
        "18446744073709551616",
        "1.5",
        "true",
        "null",
        " ",
        "\\",
    ]
)


@FUZZ
@given(st.lists(JSON_TOKENS, max_size=40).map("".join))
def test_json_token_soup(text: str) -> None:
    _decode_or_reject(JSON, text.encode("utf-8"))


# --------------------------------------------------------------------------- mutated valid input

SEEDS = st.one_of(
    EVENTS,
    unknown_messages(with_bytes=False).map(
        lambda m: UnknownEvent(
            kind=m["kind"],
            session=m["session"],
            turn=m["turn"],
            seq=m["seq"],
            origin_ns=m["origin_ns"],
            fields={
                k: v
                for k, v in m.items()
                if k not in ("kind", "session", "turn", "seq", "origin_ns")
            },
        )
    ),
)
INTERESTING_BYTES = st.integers(min_value=0, max_value=255) | st.sampled_from(
    list(b'{}[]",:\\0-e.\x80\xc0\xc1\xc4\xd9\xde\xdf\xff')
)


@st.composite
def mutated(draw: st.DrawFn, codec: MsgpackCodec | JsonCodec) -> bytes:
    """A valid encoding with a few bytes flipped, replaced, inserted, deleted or cut off."""
    data = bytearray(codec.encode(draw(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not data:
            data.append(draw(INTERESTING_BYTES))
            continue
        i = draw(st.integers(min_value=0, max_value=len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set":
            data[i] = draw(INTERESTING_BYTES)
        elif op == "insert":
            data.insert(i, draw(INTERESTING_BYTES))
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


@FUZZ
@given(mutated(MSGPACK))
def test_mutated_msgpack(data: bytes) -> None:
    ev = _decode_or_reject(MSGPACK, data)
    if ev is not None:
        _forwardable(MSGPACK, ev)


@FUZZ
@given(mutated(JSON))
def test_mutated_json(data: bytes) -> None:
    ev = _decode_or_reject(JSON, data)
    if ev is not None:
        _forwardable(JSON, ev)


# --------------------------------------------------------------------------- round trips


@ROUND_TRIP
@given(EVENTS)
def test_round_trip_msgpack(ev: Event) -> None:
    data = MSGPACK.encode(ev)
    back = MSGPACK.decode(data)
    assert type(back) is type(ev)
    assert back == ev
    assert MSGPACK.encode(back) == data


@ROUND_TRIP
@given(EVENTS)
def test_round_trip_json(ev: Event) -> None:
    data = JSON.encode(ev)
    back = JSON.decode(data)
    assert type(back) is type(ev)
    assert back == ev
    assert JSON.encode(back) == data


@ROUND_TRIP
@given(EVENTS)
def test_json_and_msgpack_carry_the_same_event(ev: Event) -> None:
    assert JSON.decode(JSON.encode(MSGPACK.decode(MSGPACK.encode(ev)))) == ev


@ROUND_TRIP
@given(EVENTS)
def test_msgpack_wire_has_header_first_and_bytes_as_bin(ev: Event) -> None:
    raw = msgspec.msgpack.decode(MSGPACK.encode(ev))
    assert list(raw)[:7] == ["kind", "session", "turn", "seq", "origin_ns", "inc", "pos"]
    assert raw["kind"] == ev.kind
    if "pcm" in raw:
        assert type(raw["pcm"]) is bytes
        assert raw["pcm"] == ev.pcm  # type: ignore[attr-defined]


def _check_unknown_round_trip(codec: MsgpackCodec | JsonCodec, message: dict[str, Any]) -> None:
    module: Any = msgspec.msgpack if isinstance(codec, MsgpackCodec) else msgspec.json
    data = module.encode(message)
    ev = codec.decode(data)
    assert type(ev) is UnknownEvent
    assert ev.kind == message["kind"]
    assert (ev.session, ev.turn, ev.seq, ev.origin_ns, ev.inc, ev.pos) == (
        message["session"],
        message["turn"],
        message["seq"],
        message["origin_ns"],
        message["inc"],
        message["pos"],
    )
    header = {"kind", "session", "turn", "seq", "origin_ns", "inc", "pos"}
    assert ev.fields == {k: v for k, v in message.items() if k not in header}
    # Fields in the standard order: re-encoding is byte-identical.
    assert codec.encode(ev) == data
    assert codec.decode(codec.encode(ev)) == ev


@ROUND_TRIP
@given(unknown_messages(with_bytes=True))
def test_unknown_kinds_round_trip_msgpack(message: dict[str, Any]) -> None:
    _check_unknown_round_trip(MSGPACK, message)


@ROUND_TRIP
@given(unknown_messages(with_bytes=False))
def test_unknown_kinds_round_trip_json(message: dict[str, Any]) -> None:
    _check_unknown_round_trip(JSON, message)


@ROUND_TRIP
@given(unknown_messages(with_bytes=False))
def test_unknown_kinds_cross_from_msgpack_to_json(message: dict[str, Any]) -> None:
    ev = MSGPACK.decode(msgspec.msgpack.encode(message))
    assert JSON.encode(ev) == msgspec.json.encode(message)
    assert JSON.decode(JSON.encode(ev)) == ev


@ROUND_TRIP
@given(
    st.sampled_from(["asr.final", "llm.delta", "turn.commit"]),
    st.text(max_size=16),
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k not in {"kind", "text", "session"}),
        field_values(with_bytes=False),
        max_size=4,
    ),
)
def test_known_kinds_ignore_any_unknown_fields(kind: str, text: str, extra: dict[str, Any]) -> None:
    cls = known_kinds()[kind]
    reserved = {f.name for f in msgspec.structs.fields(cls)}
    extra = {k: v for k, v in extra.items() if k not in reserved}
    message = {"kind": kind, "text": text, **extra}
    expected = cls(text=text)  # type: ignore[call-arg]
    assert MSGPACK.decode(msgspec.msgpack.encode(message)) == expected
    assert JSON.decode(msgspec.json.encode(message)) == expected
