"""ScriptedCaller against the packaged demo pipeline, in virtual time."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rspp.demo import DemoLine, demo_pipeline
from rspp.events import Event, TurnCommit, TurnDone, TurnInterrupted
from rspp.testing import RecordingSink, ScriptedCaller, Spoken, Utterance, run_virtual

MS = 1_000_000

SCRIPT: list[tuple[str, float | None, str]] = [
    ("Hi, who am I talking to?", None, "Hello! I am a demo voice agent."),
    (
        "What will the weather be like in Paris tomorrow?",
        None,
        "Tomorrow in Paris it will be mild and mostly cloudy, around fourteen degrees. "
        "There is a chance of light rain in the late afternoon, so take an umbrella. "
        "The wind will be light from the west, and the evening should be dry and cool.",
    ),
    (
        "Sorry, stop, I meant London.",
        1500.0,
        "No problem. In London tomorrow expect showers and about twelve degrees.",
    ),
]


class Played:
    def __init__(self) -> None:
        self.sink = RecordingSink()
        self.events: list[Event] = []
        self.spoken: list[Spoken] = []
        self.returned: list[Spoken] = []
        self.ended_at = 0

    def first(self, kind: str, turn: int) -> int:
        return next(t for t, ev in self.sink.records if ev.kind == kind and ev.turn == turn)


def lines(script: list[tuple[str, float | None, str]]) -> list[DemoLine]:
    return [DemoLine(user, reply, barge_in_after_ms=barge) for user, barge, reply in script]


def play(script: list[tuple[str, float | None, str]], **caller: Any) -> Played:
    # Without speculation, every reply is rooted in a turn.commit the tests can look at.
    pipeline = demo_pipeline(lines(script), turns={"speculate": False})
    out = Played()

    async def main() -> None:
        async with pipeline.session(
            "caller-test", sinks={"client": out.sink}, observers=[out.events.append]
        ) as session:
            c = ScriptedCaller(
                session,
                out.sink,
                [Utterance(user, barge_in_after_ms=barge) for user, barge, _ in script],
                **caller,
            )
            out.returned = await c.play()
            out.spoken = c.spoken
            out.ended_at = session.now_ns()

    run_virtual(main())
    return out


@pytest.fixture(scope="module")
def conversation() -> tuple[Played, float]:
    wall = time.perf_counter()
    played = play(SCRIPT)
    return played, time.perf_counter() - wall


def test_the_script_plays_to_the_end_in_virtual_time(conversation: tuple[Played, float]) -> None:
    played, wall_s = conversation
    assert played.returned is played.spoken
    assert len(played.spoken) == 3
    call_s = (played.ended_at - played.spoken[0].start_ns) / 1e9
    assert call_s > 10.0, "a conversation of several seconds..."
    # In real time it would take at least call_s; in virtual time it takes a fraction of a
    # second, so half of call_s is generous however loaded the machine.
    assert wall_s < call_s / 2, "...that runs much faster than real time"
    commits = [ev for ev in played.events if isinstance(ev, TurnCommit)]
    assert [c.text for c in commits] == [user for user, _, _ in SCRIPT]
    # Every reply ended: 1 and 3 played out, 2 cut off by the barge-in.
    assert [ev.turn for ev in played.sink.events if isinstance(ev, TurnDone)] == [1, 3]
    interrupted = [ev for ev in played.sink.events if isinstance(ev, TurnInterrupted)]
    assert [ev.turn for ev in interrupted] == [2]
    assert played.sink.replies_ended == 3
    heard = {turn: "".join(f.text for f in played.sink.audio(turn)) for turn in (1, 2, 3)}
    assert heard[1] == SCRIPT[0][2]
    assert heard[3] == SCRIPT[2][2]
    assert SCRIPT[1][2].startswith(heard[2]) and 0 < len(heard[2]) < len(SCRIPT[1][2])
    assert interrupted[0].heard_text == heard[2]


def test_spoken_timeline_has_texts_and_durations(conversation: tuple[Played, float]) -> None:
    played, _ = conversation
    assert [s.text for s in played.spoken] == [user for user, _, _ in SCRIPT]
    assert [s.barge_in for s in played.spoken] == [False, False, True]
    for s in played.spoken:
        expected_ms = len(s.text.split()) * 330.0
        # Speech is sent in whole 20 ms frames.
        assert (s.end_ns - s.start_ns) / MS == pytest.approx(expected_ms, abs=20.0), s.text
    starts = [s.start_ns for s in played.spoken]
    ends = [s.end_ns for s in played.spoken]
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))


def test_normal_turns_wait_for_the_reply_then_pause(conversation: tuple[Played, float]) -> None:
    played, _ = conversation
    reply1_done = played.first("turn.done", 1)
    second = played.spoken[1]
    assert second.start_ns > reply1_done
    # The default pause is 400 ms of silence after the reply ended (to a frame).
    assert (second.start_ns - reply1_done) / MS == pytest.approx(400.0, abs=20.0)


def test_barge_in_starts_while_the_previous_reply_plays(
    conversation: tuple[Played, float],
) -> None:
    played, _ = conversation
    barge = played.spoken[2]
    reply2_first_audio = played.first("audio.out", 2)
    reply2_cut = played.first("turn.interrupted", 2)
    assert reply2_first_audio < barge.start_ns < reply2_cut
    assert (barge.start_ns - reply2_first_audio) / MS == pytest.approx(1500.0, abs=20.0)
    # The turn manager needs 300 ms of speech (and a word) to accept the interruption.
    assert (reply2_cut - barge.start_ns) / MS == pytest.approx(300.0, abs=20.0)
    assert not [ev for ev in played.sink.events if isinstance(ev, TurnDone) and ev.turn == 2]


def test_the_caller_times_out_when_the_bot_never_answers() -> None:
    script = SCRIPT[:2]
    pipeline = demo_pipeline(lines(script), llm={"ttft_ms": 1e9})
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            caller = ScriptedCaller(
                session, sink, [Utterance(user) for user, _, _ in script], max_wait_s=15.0
            )
            await caller.play()

    wall = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"no reply before utterance 1 within 15\.0 s"):
        run_virtual(main())
    # The caller's wait is virtual: in real time it would take the 15 s (and the first
    # utterance's 2 s before it); half of that is generous however loaded the machine.
    # (Not longer: after 20 s without progress the kernel's watchdog ends the reply.)
    assert time.perf_counter() - wall < 8.0
    assert sink.audio() == []


def test_a_barge_in_first_utterance_waits_for_nothing() -> None:
    played = play([("Hello?", 200.0, "Hi.")])
    (spoken,) = played.spoken
    assert spoken.barge_in
    assert played.sink.replies_ended == 1
