"""The server side of Twilio Media Streams, without a socket: sequence, parsing, marks, clears.

Frames are Twilio's documented examples ("Media Streams - WebSocket Messages"),
numbers as strings as Twilio sends them.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspp.transports.twilio.protocol import (
    MAX_PENDING_MARKS,
    TRANSITIONS,
    Connected,
    Dtmf,
    MarkCleared,
    Media,
    MediaStream,
    Played,
    ProtocolError,
    Start,
    State,
    Stop,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"

CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC123",
        "streamSid": SID,
        "callSid": "CA123",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"From": "+15550100"},
    },
    "streamSid": SID,
}
STOP = {
    "event": "stop",
    "sequenceNumber": "5",
    "stop": {"accountSid": "AC123", "callSid": "CA123"},
    "streamSid": SID,
}


def frame(message: dict[str, Any]) -> str:
    return json.dumps(message)


def media(payload: bytes = b"\xff" * 160, chunk: int = 1) -> str:
    return frame(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 2),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(20 * chunk),
                "payload": base64.b64encode(payload).decode(),
            },
            "streamSid": SID,
        }
    )


def echo(name: str) -> str:
    return frame({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}})


def started() -> MediaStream:
    stream = MediaStream()
    stream.receive(frame(CONNECTED))
    stream.receive(frame(START))
    return stream


def mark_of(frames: list[str]) -> str:
    last = json.loads(frames[-1])
    assert last["event"] == "mark"
    return str(last["mark"]["name"])


def reason(stream: MediaStream, data: str | bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        stream.receive(data)
    return str(info.value.reason)


# -- inbound -----------------------------------------------------------------------------------


def test_a_documented_stream_parses_into_typed_events() -> None:
    stream = MediaStream()
    assert stream.receive(frame(CONNECTED)) == Connected("Call", "1.0.0")
    start = stream.receive(frame(START))
    assert start == Start(
        SID, "CA123", "AC123", ("inbound",), {"From": "+15550100"}, "audio/x-mulaw", 8000, 1
    )
    assert isinstance(start, Start) and start.mulaw_8k
    assert stream.state is State.STARTED and stream.stream_sid == SID
    assert stream.receive(media(b"\x01\x02", chunk=3)) == Media(b"\x01\x02", "inbound", 3, 60)
    dtmf = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5"}
    assert stream.receive(frame({**dtmf, "dtmf": {"track": "inbound_track", "digit": "1"}})) == (
        Dtmf("1", "inbound_track")
    )
    assert stream.receive(frame(STOP)) == Stop("AC123", "CA123")
    assert stream.state is State.STOPPED


def test_connected_is_optional_but_start_comes_before_anything_else() -> None:
    stream = MediaStream()
    assert reason(stream, media()) == "out_of_order"
    assert reason(stream, frame(STOP)) == "out_of_order"
    assert stream.state is State.IDLE
    assert isinstance(stream.receive(frame(START)), Start)  # no `connected`: served anyway
    assert reason(stream, frame(START)) == "out_of_order"  # only one start
    assert reason(stream, frame(CONNECTED)) == "out_of_order"
    stream.receive(frame(STOP))
    assert reason(stream, media()) == "out_of_order"  # nothing after stop


def test_bad_frames_are_one_error_type_with_a_reason_and_change_nothing() -> None:
    stream = started()
    cases: dict[str, list[str | bytes]] = {
        "malformed": ["not json", "[1, 2]", b"\x00\xff", '{"event": 3}'],
        "unknown_event": ['{"event": "hangup"}'],
        "invalid": [
            json.dumps({"event": "media", "streamSid": SID}),
            '{"event": "media", "media": {"payload": 5}}',
            '{"event": "dtmf", "dtmf": {"digit": "X"}}',
            '{"event": "dtmf", "dtmf": {"digit": "12"}}',
        ],
        "bad_payload": [media().replace('"payload": "', '"payload": "@@not base64')],
        "wrong_stream": [media().replace(SID, "MZother")],
        "mark": [echo("a mark nobody sent")],
    }
    for expected, frames in cases.items():
        for data in frames:
            assert reason(stream, data) == expected, data
    assert stream.state is State.STARTED
    assert isinstance(stream.receive(media()), Media)  # the stream goes on


def test_unknown_fields_are_ignored() -> None:
    stream = MediaStream()
    assert isinstance(stream.receive(frame({**START, "novel": {"x": 1}})), Start)


def test_the_transition_table_is_the_whole_truth() -> None:
    messages = {
        "connected": frame(CONNECTED),
        "start": frame(START),
        "media": media(),
        "dtmf": frame({"event": "dtmf", "dtmf": {"digit": "#"}}),
        "stop": frame(STOP),
    }
    for state in State:
        for event, data in messages.items():
            stream = MediaStream()
            stream.state = state
            if state in (State.STARTED, State.STOPPED):
                stream.start = Start(SID, "", "", (), {}, "audio/x-mulaw", 8000, 1)
            after = TRANSITIONS.get((state, event))
            if after is None:
                assert reason(stream, data) == "out_of_order"
                assert stream.state is state
            else:
                stream.receive(data)
                assert stream.state is after


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_garbage_is_a_protocol_error_or_an_event(data: str | bytes) -> None:
    stream = started()
    with contextlib.suppress(ProtocolError):
        stream.receive(data)
    assert isinstance(stream.receive(media()), Media)


# -- outbound and marks ------------------------------------------------------------------------


def test_audio_goes_out_as_media_then_a_mark_that_counts_once_echoed() -> None:
    stream = started()
    frames = stream.send_audio(4, [b"\x7f" * 160, b"\x7f" * 160])
    sent = [json.loads(f) for f in frames]
    assert [m["event"] for m in sent] == ["media", "media", "mark"]
    assert all(m["streamSid"] == SID for m in sent)
    assert base64.b64decode(sent[0]["media"]["payload"]) == b"\x7f" * 160
    name = mark_of(frames)
    assert "t4" in name and "40ms" in name  # for people reading Twilio's logs
    assert stream.pending_marks == 1
    second = mark_of(stream.send_audio(4, [b"\x7f" * 80]))
    assert stream.receive(echo(name)) == Played(4, 40.0, name)
    assert stream.receive(echo(second)) == Played(4, 50.0, second)  # a total for the turn
    assert stream.pending_marks == 0
    assert reason(stream, echo(second)) == "mark"  # echoed twice: not counted twice


def test_an_echo_settles_the_marks_before_it() -> None:
    stream = started()
    first = mark_of(stream.send_audio(1, [b"\xff" * 160]))
    last = mark_of(stream.send_audio(1, [b"\xff" * 160]))
    assert stream.receive(echo(last)) == Played(1, 40.0, last)
    assert stream.pending_marks == 0
    assert reason(stream, echo(first)) == "mark"


def test_marks_echoed_after_a_clear_for_audio_before_it_do_not_count() -> None:
    stream = started()
    played = mark_of(stream.send_audio(2, [b"\xff" * 160]))
    queued = [mark_of(stream.send_audio(2, [b"\xff" * 160])) for _ in range(3)]
    assert stream.receive(echo(played)) == Played(2, 20.0, played)
    clear = stream.clear(2)
    assert clear is not None and json.loads(clear) == {"event": "clear", "streamSid": SID}
    # Twilio empties its buffer and sends every pending mark back at once.
    assert [stream.receive(echo(name)) for name in queued] == [
        MarkCleared(2, name) for name in queued
    ]
    # Audio of the cleared reply asked for later is not sent; the next reply's counts.
    assert stream.send_audio(2, [b"\xff" * 160]) == []
    nxt = mark_of(stream.send_audio(3, [b"\xff" * 160]))
    assert stream.receive(echo(nxt)) == Played(3, 20.0, nxt)


def test_a_clear_that_would_only_cut_a_newer_reply_is_not_sent() -> None:
    stream = started()
    mark_of(stream.send_audio(5, [b"\xff" * 160]))
    assert stream.clear(4) is None  # Twilio holds only reply 5's audio
    assert stream.send_audio(4, [b"\xff" * 160]) == []  # but reply 4 stays cleared
    assert stream.clear(5) is not None
    assert stream.clear(5) is not None  # nothing pending: a harmless clear, sent anyway


def test_nothing_is_sent_before_start_nor_after_stop() -> None:
    stream = MediaStream()
    with pytest.raises(ProtocolError):
        stream.send_audio(1, [b"\xff"])
    with pytest.raises(ProtocolError):
        stream.clear(1)
    stream = started()
    assert stream.send_audio(1, []) == [] and stream.send_audio(1, [b""]) == []
    stream.receive(frame(STOP))
    assert stream.send_audio(1, [b"\xff" * 160]) == []
    assert stream.clear(1) is None


def test_a_peer_that_never_echoes_cannot_grow_the_marks_without_bound() -> None:
    stream = started()
    first = mark_of(stream.send_audio(1, [b"\xff"]))
    for _ in range(MAX_PENDING_MARKS):
        stream.send_audio(1, [b"\xff"])
    assert stream.pending_marks == MAX_PENDING_MARKS
    assert reason(stream, echo(first)) == "mark"  # forgotten: never counted
