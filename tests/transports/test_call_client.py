"""The client's end of the call protocol, without a socket: handshake, dedupe, playout.

Time is a number passed in; frames are built with the wire module the server
uses, so what is tested here is exactly what a socket would carry.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspp.events import ClearBuffer, Event, LlmDelta, TurnDone, TurnInterrupted
from rspp.transports.call.client import (
    BotAudio,
    CallClient,
    Cleared,
    Closed,
    Happening,
    Opened,
    Played,
    Playout,
    Received,
    ReplyEnded,
    ReplyStarted,
    ServerLatency,
    State,
)
from rspp.transports.call.wire import (
    AudioFormat,
    AudioFrame,
    Bye,
    Latency,
    Ready,
    WireError,
    encode_audio_frame,
    encode_message,
)

FMT = AudioFormat(sample_rate=16000)
FRAME = bytes(640)  # 20 ms at 16 kHz mono


def ready(**fields: Any) -> str:
    values: dict[str, Any] = {
        "session": "s1",
        "pipeline": "demo",
        "input": FMT,
        "output": FMT,
        "resume_token": "resume-me",
        "resume_window_s": 30.0,
        "lead_ms": 60.0,
    }
    values.update(fields)
    return encode_message(Ready(**values))


def opened(**kwargs: Any) -> CallClient:
    client = CallClient(token="t", input=FMT, output=FMT, **kwargs)
    client.hello()
    client.data_to_send()
    client.receive_text(ready(), 0.0)
    return client


def audio(turn: int, pos: int, text: str = "", pcm: bytes = FRAME, inc: int = 1) -> bytes:
    return encode_audio_frame(turn, inc, pos, text, pcm)


def event(ev: Event, pos: int = 0, inc: int = 1) -> str:
    ev.inc, ev.pos = (inc, pos) if pos else (0, 0)
    return encode_message(ev)


def sent(client: CallClient) -> list[dict[str, Any]]:
    return [json.loads(f) for f in client.data_to_send() if isinstance(f, str)]


def reports(client: CallClient) -> list[tuple[int, float]]:
    return [(m["turn"], m["played_ms"]) for m in sent(client) if m["kind"] == "playback.position"]


# -- handshake -------------------------------------------------------------------------


def test_the_hello_announces_formats_and_token_and_the_ready_opens_the_call() -> None:
    client = CallClient(token="t", pipeline="demo", input=FMT, output=AudioFormat(48000, 2))
    client.hello()
    (hello,) = sent(client)
    assert hello["kind"] == "call.hello" and hello["protocol"] == 1
    assert hello["token"] == "t" and hello["pipeline"] == "demo"
    assert hello["output"] == {"sample_rate": 48000, "channels": 2, "encoding": "pcm16"}
    assert hello["resume"] == "" and hello["last_pos"] is None
    (happening,) = client.receive_text(ready(), 0.0)
    assert isinstance(happening, Opened) and happening.ready.session == "s1"
    assert client.state is State.OPEN


def test_frames_before_the_ready_break_the_protocol() -> None:
    client = CallClient()
    client.hello()
    with pytest.raises(WireError):
        client.receive_bytes(audio(1, 1), 0.0)
    with pytest.raises(WireError):
        client.receive_text(event(LlmDelta(turn=1, text="hi")), 0.0)
    with pytest.raises(WireError):
        opened().receive_text(ready(), 1.0)  # a second ready, uninvited


def test_nothing_is_sent_before_the_call_is_open() -> None:
    client = CallClient(input=FMT)
    with pytest.raises(WireError):
        client.send_text("hello")
    client.send_audio(FRAME)  # a microphone does not stop while the network is down
    assert client.dropped_audio_bytes == len(FRAME)
    assert client.data_to_send() == []


def test_audio_is_split_into_frames_the_server_accepts() -> None:
    client = opened()
    client.send_audio(bytes(200_000))
    frames = client.data_to_send()
    assert all(isinstance(f, bytes) and len(f) <= 65536 for f in frames)
    assert sum(len(f) for f in frames) == 200_000
    with pytest.raises(ValueError, match="whole"):
        client.send_audio(b"\x00")


def test_a_resume_hello_carries_the_token_and_the_last_position() -> None:
    client = opened()
    client.receive_bytes(audio(1, 7), 0.0)
    client.connection_lost()
    assert client.state is State.IDLE and client.resumable
    client.hello()
    (hello,) = sent(client)
    assert hello["resume"] == "resume-me" and hello["last_pos"] == [1, 7]
    client.receive_text(ready(resumed=True), 1.0)
    assert client.state is State.OPEN


def test_a_resume_before_anything_positioned_asks_for_everything() -> None:
    client = opened()
    client.connection_lost()
    client.hello()
    (hello,) = sent(client)
    assert hello["last_pos"] == [0, 0]  # None would mean "resend nothing"


def test_bye_and_the_servers_answer_end_the_call() -> None:
    client = opened()
    client.bye()
    assert [m["kind"] for m in sent(client)] == ["call.bye"]
    assert client.state is State.CLOSED and not client.resumable
    assert client.receive_bytes(audio(1, 1), 0.0) == []  # too late to matter
    (closed,) = client.receive_text(encode_message(Bye(reason="bye")), 0.1)
    assert isinstance(closed, Closed)
    with pytest.raises(WireError):
        client.hello()


def test_the_server_saying_bye_closes_the_call() -> None:
    client = opened()
    happenings = client.receive_text(encode_message(Bye(reason="server_shutdown")), 0.0)
    assert happenings[-1] == Closed("server_shutdown") and client.state is State.CLOSED


def test_latency_and_events_are_handed_over() -> None:
    client = opened()
    (latency,) = client.receive_text(encode_message(Latency(turn=2, values={"v2v_ms": 9.0})), 0)
    assert latency == ServerLatency(2, {"v2v_ms": 9.0})
    (received,) = client.receive_text(event(LlmDelta(turn=2, text="Hi")), 0.0)
    assert isinstance(received, Received) and received.event.kind == "llm.delta"


def test_typed_text_interrupt_and_cancel_are_abi_events() -> None:
    client = opened()
    client.send_text("book a table")
    client.interrupt()
    client.cancel(3)
    kinds = [(m["kind"], m.get("text"), m["turn"]) for m in sent(client)]
    assert kinds == [
        ("user.text", "book a table", 0),
        ("control.interrupt", None, 0),
        ("control.cancel", None, 3),
    ]


# -- duplicates ------------------------------------------------------------------------


def test_anything_at_or_below_the_highest_position_is_a_duplicate() -> None:
    client = opened()
    assert client.receive_bytes(audio(1, 5), 0.0)
    assert client.receive_bytes(audio(1, 5), 0.0) == []
    assert client.receive_bytes(audio(1, 4), 0.0) == []
    assert client.receive_text(event(TurnDone(turn=1), pos=3), 0.0) == []
    assert client.duplicates == 3
    # A new incarnation continues above the old one, whatever its pos.
    assert client.receive_bytes(audio(1, 1, inc=2), 0.0)
    assert client.last_pos == (2, 1)
    # Unpositioned events (transcripts, text) are never duplicates.
    delta = event(LlmDelta(turn=1, text="again"))
    assert client.receive_text(delta, 0.0) and client.receive_text(delta, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 60)), min_size=1, max_size=60),
    st.data(),
)
def test_resends_after_a_resume_are_never_delivered_twice(
    positions: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Whatever the server resends, in order, each (inc, pos) is delivered once, ascending.

    About half the examples drop the connection and resend an overlapping tail
    (the server resends what it holds above ``last_pos``; a stale replay of
    older frames is filtered too).
    """
    stream = sorted(set(positions))
    client = opened()
    delivered: list[tuple[int, int]] = []

    def feed(items: list[tuple[int, int]]) -> None:
        for inc, pos in items:
            happenings = client.receive_bytes(audio(1, pos, inc=inc), 0.0)
            delivered.extend(
                (h.frame.inc, h.frame.pos) for h in happenings if isinstance(h, BotAudio)
            )

    cut = data.draw(st.integers(0, len(stream)))
    feed(stream[:cut])
    if data.draw(st.booleans()):
        client.connection_lost()
        client.hello()
        client.receive_text(ready(resumed=True), 0.0)
        back = data.draw(st.integers(0, cut))
        feed(stream[back:])  # what the server still held, and then the rest
    else:
        feed(stream[cut:])
    assert delivered == stream


# -- playout ---------------------------------------------------------------------------


def played_ms(happenings: list[Happening]) -> float:
    return sum(len(h.pcm) for h in happenings if isinstance(h, Played)) / 32


def test_audio_plays_at_real_time_from_when_it_arrives() -> None:
    playout = Playout(FMT)
    assert playout.advance(5.0) == []  # nothing to play: the clock just runs
    playout.push(AudioFrame(1, 1, 1, "Hi ", FRAME * 5), 10.0)  # 100 ms
    first = playout.advance(10.03)
    assert isinstance(first[0], ReplyStarted) and first[0].at == 10.0
    assert played_ms(first) == pytest.approx(30.0, abs=0.1)
    assert playout.held_ms() == pytest.approx(70.0, abs=0.1)
    rest = playout.advance(11.0)
    assert played_ms(rest) == pytest.approx(70.0, abs=0.1)
    assert [h.text for h in rest if isinstance(h, Played)][-1] == "Hi "  # heard once played
    # An underrun is silence: the next frame starts when it arrives, not back-to-back.
    playout.push(AudioFrame(1, 1, 2, "", FRAME), 12.0)
    (piece,) = [h for h in playout.advance(12.01) if isinstance(h, Played)]
    assert piece.at == 12.0


def test_pause_holds_the_audio_and_resume_plays_it_on() -> None:
    playout = Playout(FMT)
    playout.push(AudioFrame(1, 1, 1, "", FRAME * 10), 0.0)
    playout.advance(0.05)
    playout.pause(0.05)
    assert playout.reports[-1] == (1, pytest.approx(50.0, abs=0.1))  # where it stopped
    assert playout.advance(1.0) == [] and playout.held_ms() == pytest.approx(150.0, abs=0.1)
    playout.resume(1.0)
    assert played_ms(playout.advance(1.1)) == pytest.approx(100.0, abs=0.1)


def test_a_clear_drops_the_held_audio_at_once_and_reports_where_it_stopped() -> None:
    client = opened()
    for pos in range(1, 11):
        client.receive_bytes(audio(1, pos, "word "), 0.0)  # 200 ms
    client.advance(0.07)
    client.data_to_send()
    happenings = client.receive_text(event(ClearBuffer(turn=1), pos=11), 0.07)
    ended = [h for h in happenings if isinstance(h, ReplyEnded)]
    cleared = [h for h in happenings if isinstance(h, Cleared)]
    assert ended == [ReplyEnded(1, pytest.approx(70.0, abs=0.1), True)]
    assert cleared[0].dropped_ms == pytest.approx(130.0, abs=0.1)
    assert client.playout.held_ms() == 0.0
    assert reports(client) == [(1, pytest.approx(70.0, abs=0.1))]
    # Audio of the cleared turn that still arrives is never played.
    assert not any(isinstance(h, BotAudio) for h in client.receive_bytes(audio(1, 12), 0.1))
    assert played_ms(client.advance(1.0)) == 0.0
    # The next reply plays.
    client.receive_bytes(audio(2, 13), 1.0)
    assert played_ms(client.advance(1.02)) == pytest.approx(20.0, abs=0.1)


def test_a_turn_ends_when_its_audio_has_played_not_when_the_server_says_done() -> None:
    client = opened()
    for pos in range(1, 6):
        client.receive_bytes(audio(1, pos), 0.0)  # 100 ms
    happenings = client.receive_text(event(TurnDone(turn=1), pos=6), 0.04)
    assert not any(isinstance(h, ReplyEnded) for h in happenings)  # 60 ms still to play
    client.data_to_send()
    ended = [h for h in client.advance(0.2) if isinstance(h, ReplyEnded)]
    assert ended == [ReplyEnded(1, pytest.approx(100.0), False)]
    assert reports(client) == [(1, pytest.approx(100.0))]  # the end of the turn's audio


def test_a_reply_without_audio_ends_on_its_done_or_its_interruption() -> None:
    client = opened()
    done = client.receive_text(event(TurnDone(turn=1), pos=1), 0.0)
    assert ReplyEnded(1, 0.0, False) in done
    cut = client.receive_text(event(TurnInterrupted(turn=2), pos=2), 0.0)
    assert ReplyEnded(2, 0.0, True) in cut
    assert reports(client) == []  # nothing was played, nothing to say


def test_a_reply_whose_audio_was_never_played_reports_zero_when_cleared() -> None:
    """Without a report the server would count everything it sent as heard."""
    client = opened()
    client.receive_bytes(audio(1, 1), 0.0)
    client.receive_text(event(ClearBuffer(turn=1), pos=2), 0.0)  # before any of it played
    assert reports(client) == [(1, 0.0)]


def test_words_of_frames_without_audio_are_heard_with_the_audio_after_them() -> None:
    """A resampler may hand a frame's words over before their audio (an empty frame)."""
    playout = Playout(FMT)
    playout.push(AudioFrame(1, 1, 1, "Tomorrow ", b""), 0.0)
    playout.push(AudioFrame(1, 1, 2, "it ", FRAME), 0.0)
    texts = [h.text for h in playout.advance(0.02) if isinstance(h, Played)]
    assert "".join(texts) == "Tomorrow it "


def test_the_last_words_of_a_reply_are_heard_even_if_their_frame_had_no_audio() -> None:
    playout = Playout(FMT)
    playout.push(AudioFrame(1, 1, 1, "Fine, ", FRAME), 0.0)
    playout.push(AudioFrame(1, 1, 2, "thanks.", b""), 0.0)
    texts = [h.text for h in playout.advance(0.1) if isinstance(h, Played)]
    texts += [h.text for h in playout.done(1, 0.1) if isinstance(h, Played)]
    assert "".join(texts) == "Fine, thanks."


def test_reports_go_out_at_least_every_report_interval_while_playing() -> None:
    client = opened(report_every_ms=100.0)
    for pos in range(1, 51):
        client.receive_bytes(audio(1, pos), 0.0)  # one second
    got: list[tuple[int, float]] = []
    now = 0.0
    while now < 1.2:
        now += 0.01
        client.advance(now)
        got += reports(client)
    totals = [ms for _, ms in got]
    assert totals == sorted(totals) and totals[-1] == pytest.approx(1000.0)
    gaps = [b - a for a, b in zip([0.0, *totals], totals, strict=False)]
    assert max(gaps) <= 110.0  # a 10 ms tick: at most one tick late


def test_reports_made_while_disconnected_go_out_after_the_resume() -> None:
    client = opened()
    client.receive_bytes(audio(1, 1), 0.0)
    client.connection_lost()
    client.advance(0.5)
    assert client.data_to_send() == []
    client.hello()
    client.data_to_send()
    client.receive_text(ready(resumed=True), 1.0)
    assert reports(client) == [(1, pytest.approx(20.0))]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("audio"), st.integers(1, 4), st.integers(1, 8)),
            st.tuples(st.just("clear"), st.integers(0, 4), st.just(0)),
            st.tuples(st.just("done"), st.integers(1, 4), st.just(0)),
            st.tuples(st.just("pause"), st.just(0), st.just(0)),
            st.tuples(st.just("resume"), st.just(0), st.just(0)),
            st.tuples(st.just("tick"), st.integers(1, 80), st.just(0)),
        ),
        max_size=60,
    )
)
def test_playout_invariants_under_any_interleaving(steps: list[tuple[str, int, int]]) -> None:
    """Random arrivals, clears, dones, pauses and ticks.

    Checked throughout: nothing of a turn is played after a clear covering it;
    played audio never exceeds what arrived, and never runs ahead of the clock
    (since the turn first arrived); reports are running totals, ascending per
    turn; each reply ends once. (Examples hit every kind of step: about 1 in 6
    steps is a clear, so most examples clear something that was playing.)
    """
    playout = Playout(FMT, report_every_ms=50.0)
    now = 0.0
    cleared = 0
    turn_floor = 1
    arrived: dict[int, int] = {}
    played: dict[int, int] = {}
    first: dict[int, float] = {}
    ended: list[int] = []
    last_report: dict[int, float] = {}
    for op, a, b in steps:
        happenings: list[Happening] = []
        clearing = 0
        if op == "audio":
            turn = max(a, turn_floor)  # replies come in turn order
            turn_floor = turn
            if turn > cleared and not playout.ended(turn):
                arrived[turn] = arrived.get(turn, 0) + 640 * b
                first.setdefault(turn, now)
            happenings = playout.push(AudioFrame(turn, 1, 1, "", FRAME * b), now)
        elif op == "clear":
            clearing = a
            happenings = playout.clear(a, now)
        elif op == "done":
            happenings = playout.done(a, now)
        elif op == "pause":
            happenings = playout.pause(now)
        elif op == "resume":
            happenings = playout.resume(now)
        else:
            now += a / 1000
            happenings = playout.advance(now)
        for h in happenings:
            if isinstance(h, Played):
                assert h.turn > cleared
                played[h.turn] = played.get(h.turn, 0) + len(h.pcm)
                assert played[h.turn] <= arrived.get(h.turn, 0)
                assert played[h.turn] / 32 <= (now - first[h.turn]) * 1000 + 0.1
            elif isinstance(h, ReplyEnded):
                assert h.turn not in ended
                ended.append(h.turn)
        cleared = max(cleared, clearing)  # (what played before the clear, in its call, counts)
        for turn, ms in playout.reports:
            assert ms >= last_report.get(turn, -1.0)
            assert ms <= played.get(turn, 0) / 32 + 1e-6
            last_report[turn] = ms
        playout.reports.clear()
        assert all(playout.held_ms(turn) == 0.0 for turn in range(1, cleared + 1))


def test_speech_while_the_connection_is_down_is_held_and_sent_first_on_the_resume() -> None:
    client = opened(hold_audio_ms=100.0)
    client.connection_lost()
    said = [bytes([n]) * len(FRAME) for n in range(8)]  # 8 frames of 20 ms: 160 ms
    for frame in said:
        client.send_audio(frame)
    assert client.data_to_send() == []  # nothing to send it on
    assert client.dropped_audio_bytes == 3 * len(FRAME)  # held the newest 100 ms only
    client.hello()
    client.data_to_send()  # the resuming hello
    client.receive_text(ready(resumed=True), 1.0)
    assert client.data_to_send()[:5] == said[3:]  # then on with the live audio
