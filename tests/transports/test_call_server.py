"""The server's end of the call protocol, without a socket: handshake, limits, refusals, fuzz."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspp.events import ABI_VERSION, AudioIn, AudioOut, ClearBuffer, Interrupt, LlmDelta, Metrics
from rspp.transports.call.server import (
    CallClosed,
    CallServer,
    Ended,
    Input,
    Limits,
    Played,
    Refused,
    Start,
    State,
)
from rspp.transports.call.wire import (
    AudioFormat,
    Hello,
    decode_audio_frame,
    decode_message,
    encode_message,
)


def hello(**fields: object) -> str:
    return json.dumps({"kind": "call.hello", "protocol": 1, "abi": ABI_VERSION, **fields})


def open_call(
    rate_in: int = 16000, rate_out: int = 16000, channels: int = 1, limits: Limits | None = None
) -> CallServer:
    proto = CallServer(limits)
    fmt_in = {"sample_rate": rate_in, "channels": channels}
    actions = proto.receive_text(hello(input=fmt_in, output={"sample_rate": rate_out}), 0.0)
    assert isinstance(actions[0], Start)
    frame = proto.ready(
        session="s1",
        pipeline="demo",
        pipeline_rate=16000,
        resume_token="r",
        resume_window_s=30.0,
        lead_ms=60.0,
    )
    ready = decode_message(frame)
    assert ready.__class__.__name__ == "Ready"
    assert proto.state is State.OPEN
    return proto


def closes(code: int, call: object) -> None:
    with pytest.raises(CallClosed) as info:
        call()  # type: ignore[operator]
    assert info.value.code == code


# -- handshake ---------------------------------------------------------------------------------


def test_the_hello_is_parsed_with_its_formats_and_resume_fields() -> None:
    proto = CallServer()
    [start] = proto.receive_text(
        hello(
            token="t",
            pipeline="p",
            input={"sample_rate": 48000, "channels": 2},
            resume="tok",
            last_pos=[1, 42],
        ),
        0.0,
    )
    assert isinstance(start, Start)
    assert start.hello == Hello(
        protocol=1,
        token="t",
        pipeline="p",
        input=AudioFormat(48000, 2),
        resume="tok",
        last_pos=(1, 42),
    )


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        json.dumps({"kind": "control.interrupt"}),
        json.dumps({"no": "kind"}),
        hello(protocol=2),
        hello(abi="2.0"),
        hello(input={"sample_rate": 4000}),
        hello(input={"sample_rate": 16000, "encoding": "opus"}),
        hello(input={"sample_rate": 16000, "channels": 3}),
    ],
)
def test_anything_but_a_valid_hello_first_closes_with_4400(frame: str) -> None:
    closes(4400, lambda: CallServer().receive_text(frame, 0.0))


def test_audio_before_the_hello_closes_with_4400() -> None:
    closes(4400, lambda: CallServer().receive_bytes(b"\0\0" * 160, 0.0))


def test_after_close_nothing_is_accepted() -> None:
    proto = open_call()
    proto.closed()
    closes(1000, lambda: proto.receive_text(json.dumps({"kind": "control.interrupt"}), 1.0))


# -- during the call -----------------------------------------------------------------------------


def test_client_events_become_inputs_and_reports() -> None:
    proto = open_call()
    [interrupt] = proto.receive_text(json.dumps({"kind": "control.interrupt"}), 1.0)
    assert isinstance(interrupt, Input) and isinstance(interrupt.event, Interrupt)
    [played] = proto.receive_text(
        json.dumps({"kind": "playback.position", "turn": 3, "played_ms": 120.5}), 1.0
    )
    assert played == Played(3, 120.5)
    [text] = proto.receive_text(json.dumps({"kind": "user.text", "text": "hello"}), 1.0)
    assert isinstance(text, Input) and text.event.kind == "user.text"
    [bye] = proto.receive_text(json.dumps({"kind": "call.bye"}), 1.0)
    assert bye == Ended("bye")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{", "bad_json"),
        (json.dumps({"kind": "user.text", "text": ""}), "bad_json"),
        (json.dumps({"kind": "playback.position", "turn": 1, "played_ms": -1}), "bad_json"),
        (json.dumps({"kind": "llm.delta", "text": "injected"}), "kind_not_allowed"),
        (json.dumps({"kind": "control.clear_buffer"}), "kind_not_allowed"),
        (json.dumps({"kind": "call.ready"}), "bad_json"),
        (json.dumps({"kind": "acme.custom", "x": 1}), "unknown_kind"),
    ],
)
def test_bad_events_are_refused_and_the_call_goes_on(frame: str, code: str) -> None:
    proto = open_call()
    [refused] = proto.receive_text(frame, 1.0)
    assert isinstance(refused, Refused) and refused.code == code
    assert proto.state is State.OPEN
    [ok] = proto.receive_text(json.dumps({"kind": "control.interrupt"}), 1.1)
    assert isinstance(ok, Input)


def test_audio_is_resampled_and_mixed_down_to_the_pipeline_format() -> None:
    proto = open_call(rate_in=48000, channels=2)
    total = 0
    for i in range(50):  # one second of 20 ms stereo frames at 48 kHz
        for action in proto.receive_bytes(b"\x10\x00" * 960 * 2, i * 0.02):
            assert isinstance(action, Input) and isinstance(action.event, AudioIn)
            assert action.event.sample_rate == 16000 and action.event.channels == 1
            total += len(action.event.pcm) // 2
    assert abs(total - 16000) < 400  # the resampler holds back a few ms at most


def test_a_partial_sample_closes_with_4400() -> None:
    proto = open_call(channels=2)
    closes(4400, lambda: proto.receive_bytes(b"\0\0", 0.0))  # half a stereo frame


def test_an_oversized_frame_closes_with_4413() -> None:
    proto = open_call(limits=Limits(max_frame_bytes=1000))
    closes(4413, lambda: proto.receive_bytes(b"\0" * 1002, 0.0))
    proto = open_call(limits=Limits(max_frame_bytes=1000))
    closes(4413, lambda: proto.receive_text(json.dumps({"kind": "x", "p": "a" * 1000}), 0.0))


def test_audio_faster_than_the_limit_sustained_is_a_flood() -> None:
    proto = open_call()
    frame = b"\0\0" * 320  # 20 ms at 16 kHz
    for i in range(500):  # real time: fine for as long as it lasts
        proto.receive_bytes(frame, i * 0.02)
    with pytest.raises(CallClosed) as info:
        for _ in range(10_000):  # as fast as possible, no time passing
            proto.receive_bytes(frame, 10.0)
    assert info.value.code == 4429


def test_a_burst_within_the_allowance_is_not_a_flood() -> None:
    proto = open_call()
    frame = b"\0\0" * 320
    for _ in range(int(2.0 / 0.02)):  # two seconds of audio at once (a reconnect's backlog)
        proto.receive_bytes(frame, 0.0)


def test_too_many_text_frames_is_a_flood() -> None:
    proto = open_call()
    with pytest.raises(CallClosed) as info:
        for _ in range(1000):
            proto.receive_text(json.dumps({"kind": "control.interrupt"}), 5.0)
    assert info.value.code == 4429


# -- server -> client ------------------------------------------------------------------------------


def test_bot_audio_is_framed_with_turn_position_and_words() -> None:
    proto = open_call(rate_out=16000)
    ev = AudioOut(pcm=b"\x01\x00" * 320, sample_rate=16000, text="Hello ")
    ev.turn, ev.inc, ev.pos = 4, 2, 77
    frame = proto.encode(ev)
    assert isinstance(frame, bytes)
    decoded = decode_audio_frame(frame)
    assert (decoded.turn, decoded.inc, decoded.pos, decoded.text) == (4, 2, 77, "Hello ")
    assert decoded.pcm == ev.pcm


def test_bot_audio_is_resampled_to_the_client_rate() -> None:
    proto = open_call(rate_out=48000)
    samples = 0
    for _ in range(50):
        frame = proto.encode(AudioOut(pcm=b"\x01\x00" * 320, sample_rate=16000))
        assert isinstance(frame, bytes)
        samples += len(decode_audio_frame(frame).pcm) // 2
    assert abs(samples - 48000) < 1200


def test_events_are_sent_as_abi_json_and_latency_as_call_latency() -> None:
    proto = open_call()
    text = proto.encode(LlmDelta(text="hi"))
    assert isinstance(text, str) and json.loads(text)["kind"] == "llm.delta"
    clear = proto.encode(ClearBuffer(turn=3))
    assert isinstance(clear, str) and json.loads(clear) | {"turn": 3} == json.loads(clear)
    latency = proto.encode(Metrics(turn=2, name="turn.latency", values={"v2v_ms": 800.0}))
    assert isinstance(latency, str)
    assert json.loads(latency) == {"kind": "call.latency", "turn": 2, "values": {"v2v_ms": 800.0}}
    assert proto.encode(Metrics(name="session.stats")) is None


def test_nothing_is_encoded_before_the_call_is_open() -> None:
    assert CallServer().encode(LlmDelta(text="hi")) is None


# -- fuzz ------------------------------------------------------------------------------------------


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_KINDS = st.sampled_from(
    [
        "call.hello",
        "call.bye",
        "call.ready",
        "control.interrupt",
        "control.cancel",
        "playback.position",
        "user.text",
        "audio.in",
        "llm.delta",
        "x.y",
    ]
)
_FRAMES = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda kind, extra: json.dumps({"kind": kind, **extra}),
        _KINDS,
        st.dictionaries(
            st.sampled_from(["turn", "text", "played_ms", "protocol", "input", "reason", "seq"]),
            _JSONISH,
            max_size=4,
        ),
    ),
    st.binary(max_size=700),
)


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(_FRAMES, max_size=12), opened=st.booleans())
def test_no_frame_sequence_raises_anything_but_callclosed(
    frames: list[str | bytes], opened: bool
) -> None:
    proto = open_call() if opened else CallServer()
    now = 1.0
    for frame in frames:
        now += 0.02
        try:
            if isinstance(frame, bytes):
                actions = proto.receive_bytes(frame, now)
            else:
                actions = proto.receive_text(frame, now)
        except CallClosed as closed:
            assert 1000 <= closed.code < 5000
            assert proto.state is State.CLOSED
            return
        for action in actions:
            assert isinstance(action, Start | Input | Played | Refused | Ended)
            if isinstance(action, Start):
                proto.ready(
                    session="s",
                    pipeline="p",
                    pipeline_rate=16000,
                    resume_token="r",
                    resume_window_s=1.0,
                    lead_ms=0.0,
                )
            if isinstance(action, Input):
                encode_message(action.event)  # a valid event, re-encodable


def test_the_end_of_a_reply_flushes_the_resamplers_tail_first() -> None:
    from rspp.events import TurnDone

    proto = open_call(rate_out=24000)
    samples = 0
    for _ in range(10):
        ev = AudioOut(pcm=b"\x01\x00" * 320, sample_rate=16000)
        ev.turn = 1
        frame = proto.encode(ev)
        assert isinstance(frame, bytes)
        samples += len(decode_audio_frame(frame).pcm) // 2
    done = TurnDone(turn=1)
    done.inc, done.pos = 1, 40
    frames = proto.encode(done)
    assert isinstance(frames, list) and len(frames) == 2
    tail, end = frames
    assert isinstance(tail, bytes) and isinstance(end, str)
    decoded = decode_audio_frame(tail)
    assert (decoded.turn, decoded.pos) == (1, 0)
    assert json.loads(end)["kind"] == "turn.done"
    assert samples + len(decoded.pcm) // 2 == pytest.approx(10 * 480, abs=2)
