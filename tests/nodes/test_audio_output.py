"""AudioOutput: real-time paced playout, lead, text alignment, turn.done, clear_buffer, bound."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import pytest

from rspp.events import AudioOut, ClearBuffer, TtsAudio, TtsDone, TurnCommit, TurnDone
from rspp.kernel.errors import BuildError
from rspp.kernel.session import Session
from rspp.testing import RecordingSink, run_virtual, tone
from tests.kernel.helpers import make_pipeline

RATE = 16000
MS = 1_000_000  # ns
TOL = 1_000  # ns: float loop time rounded to ns


def output_pipeline(**config: Any) -> Any:
    inputs = ("tts.audio", "tts.done", "turn.commit")
    return make_pipeline(
        [
            {
                "name": "output",
                "type": "audio_output",
                "inputs": ["input"],
                "sink": "client",
                "config": config,
            }
        ],
        inputs=inputs,
    )


def chunk(ms: float, text: str = "") -> TtsAudio:
    return TtsAudio(pcm=tone(ms, RATE), sample_rate=RATE, text=text)


def frame_times(sink: RecordingSink, turn: int | None = None) -> list[int]:
    return [
        t
        for t, ev in sink.records
        if isinstance(ev, AudioOut) and (turn is None or ev.turn == turn)
    ]


def run_output(script: Any, **config: Any) -> RecordingSink:
    """Run ``script`` in a session whose reply 1 is in progress (reply audio needs a reply)."""
    pipeline = output_pipeline(**config)
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="question"))
            await script(session, sink)

    run_virtual(main())
    return sink


def test_frames_are_sent_at_real_time_pace() -> None:
    started: list[int] = []

    async def script(session: Session, sink: RecordingSink) -> None:
        started.append(session.now_ns())
        session.push(chunk(200))
        session.push(chunk(100))
        await asyncio.sleep(1.0)

    sink = run_output(script, frame_ms=20.0)
    times = frame_times(sink)
    assert len(times) == 15
    assert all(len(f.pcm) == 640 for f in sink.audio())
    assert sink.audio_ms() == pytest.approx(300.0)
    assert times[0] == pytest.approx(started[0], abs=TOL)
    for i, t in enumerate(times):
        assert t == pytest.approx(started[0] + i * 20 * MS, abs=TOL), f"frame {i}"


def test_frame_ms_sets_the_frame_size_and_the_pace() -> None:
    async def script(session: Session, sink: RecordingSink) -> None:
        session.push(chunk(200))
        await asyncio.sleep(1.0)

    sink = run_output(script, frame_ms=40.0)
    times = frame_times(sink)
    assert len(times) == 5
    assert all(f.duration_ns == 40 * MS for f in sink.audio())
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps == pytest.approx([40 * MS] * 4, abs=TOL)


def test_lead_ms_sends_that_far_ahead() -> None:
    started: list[int] = []

    async def script(session: Session, sink: RecordingSink) -> None:
        started.append(session.now_ns())
        session.push(chunk(400))
        await asyncio.sleep(1.0)

    sink = run_output(script, frame_ms=20.0, lead_ms=100.0)
    t0 = started[0]
    times = frame_times(sink)
    assert len(times) == 20
    for i, t in enumerate(times):
        # Frame i is due at t0 + 20i and is released 100 ms early (never before t0).
        expected = max(t0, t0 + (i * 20 - 100) * MS)
        assert t == pytest.approx(expected, abs=TOL), f"frame {i}"
    assert sum(1 for t in times if abs(t - t0) <= TOL) == 6


def test_play_ahead_sends_that_much_more_at_once_then_keeps_the_schedule() -> None:
    """A hand-over's make-before-break: 200 ms more leave at once, the rest at its time."""
    started: list[int] = []

    async def script(session: Session, sink: RecordingSink) -> None:
        started.append(session.now_ns())
        session.push(chunk(1000))
        await asyncio.sleep(0.3)
        session.node("output").play_ahead(200.0)
        session.timers.fire_due(session.now_ns())  # as a hand-over does, before its snapshot
        await asyncio.sleep(1.0)

    sink = run_output(script, frame_ms=20.0, lead_ms=60.0)
    t0 = started[0]
    times = frame_times(sink)
    assert len(times) == 50  # nothing lost, nothing doubled
    at_300 = t0 + 300 * MS
    # Before 300 ms, frames 0-17 (each 60 ms early); at 300 ms frame 18, due then, and
    # 200 ms (10 frames) more at once.
    assert sum(1 for t in times if t < at_300 - TOL) == 18
    assert sum(1 for t in times if abs(t - at_300) <= TOL) == 11
    for i, t in enumerate(times[29:], start=29):
        # Then each frame at its own time less the lead: the schedule did not move.
        assert t == pytest.approx(max(at_300, t0 + (i * 20 - 60) * MS), abs=2 * MS), f"frame {i}"


def test_audio_arriving_later_continues_the_schedule() -> None:
    started: list[int] = []

    async def script(session: Session, sink: RecordingSink) -> None:
        started.append(session.now_ns())
        session.push(chunk(100))
        await asyncio.sleep(0.050)  # half of it played
        session.push(chunk(100))
        await asyncio.sleep(1.0)

    sink = run_output(script)
    times = frame_times(sink)
    assert len(times) == 10
    for i, t in enumerate(times):
        assert t == pytest.approx(started[0] + i * 20 * MS, abs=TOL), f"frame {i}"


def test_text_of_a_chunk_is_spread_over_its_frames() -> None:
    text = "The quick brown fox jumps over the lazy dog. "

    async def script(session: Session, sink: RecordingSink) -> None:
        session.push(chunk(200, text))
        await asyncio.sleep(0.5)

    sink = run_output(script)
    frames = sink.audio()
    assert len(frames) == 10
    assert "".join(f.text for f in frames) == text
    # Spread, not dumped on the first frame: nine words over ten frames.
    assert sum(1 for f in frames if f.text) == 9
    assert all(len(f.text.split()) <= 1 for f in frames)


def test_a_chunk_that_is_not_a_whole_number_of_frames_keeps_its_tail() -> None:
    async def script(session: Session, sink: RecordingSink) -> None:
        session.push(chunk(50, "a b c"))
        await asyncio.sleep(0.5)

    sink = run_output(script)
    frames = sink.audio()
    assert [f.duration_ns for f in frames] == [20 * MS, 20 * MS, 10 * MS]
    assert sink.pcm() == tone(50, RATE)
    assert "".join(f.text for f in frames) == "a b c"


def test_tts_done_after_the_last_frame_gives_turn_done_with_what_was_delivered() -> None:
    async def script(session: Session, sink: RecordingSink) -> None:
        session.push(chunk(200, "hello there"))
        session.push(chunk(130, "friend"))
        session.push(TtsDone())
        await asyncio.sleep(1.0)

    sink = run_output(script)
    (done,) = sink.of_kind("turn.done")
    assert isinstance(done, TurnDone)
    assert done.turn == 1
    assert done.delivered_ms == pytest.approx(sink.audio_ms(1))
    assert done.delivered_ms == pytest.approx(330.0)
    done_t = next(t for t, ev in sink.records if ev.kind == "turn.done")
    last_frame_t = frame_times(sink)[-1]
    last = sink.audio()[-1]
    assert done_t > last_frame_t
    # turn.done when the last frame has been played, not when it was sent.
    assert done_t == pytest.approx(last_frame_t + last.duration_ns, abs=TOL)
    assert sink.replies_ended == 1


def test_turn_done_with_no_audio_reports_zero() -> None:
    async def script(session: Session, sink: RecordingSink) -> None:
        session.push(TtsDone())
        await asyncio.sleep(0.1)

    sink = run_output(script)
    (done,) = sink.of_kind("turn.done")
    assert done.delivered_ms == 0.0


def test_clear_buffer_drops_everything_buffered_at_once() -> None:
    async def script(session: Session, sink: RecordingSink) -> None:
        output = session.node("output")
        session.push(chunk(1000, "a long reply that will be cut"))
        session.push(TtsDone())
        await asyncio.sleep(0.21)  # frames at 0, 20, ..., 200 ms sent
        assert output.buffered_ms == pytest.approx(1000.0 - 220.0)
        sent_before = len(sink.audio())
        session.push(ClearBuffer(turn=1))
        assert output.buffered_ms == 0
        await asyncio.sleep(2.0)
        assert len(sink.audio()) == sent_before
        assert sink.of_kind("turn.done") == [], "the cleared turn's tts.done must go too"
        assert sink.of_kind("control.clear_buffer"), "the client is told to clear as well"
        # ... and the reply it cut is over: it ended there, with what was heard.
        (cut,) = sink.of_kind("turn.interrupted")
        assert (cut.turn, cut.reason) == (1, "cleared")  # type: ignore[attr-defined]
        assert cut.delivered_ms == pytest.approx(220.0)  # type: ignore[attr-defined]
        assert session.turns.state.value == "listening"

    run_output(script)


def test_a_new_reply_drops_the_old_one_at_once_and_plays_without_waiting() -> None:
    marks: dict[str, int] = {}

    async def script(session: Session, sink: RecordingSink) -> None:
        output = session.node("output")
        session.push(chunk(1000, "old reply"))  # reply 1
        session.push(TtsDone())
        await asyncio.sleep(0.31)  # frames at 0, 20, ..., 300 ms sent
        assert output.buffered_ms == pytest.approx(1000.0 - 320.0)
        marks["commit"] = session.now_ns()
        session.push(TurnCommit(text="user spoke again"))  # supersedes reply 1
        assert output.buffered_ms == 0  # the kernel's clear_buffer, before push returned
        session.push(chunk(200, "new reply"))  # reply 2
        session.push(TtsDone())
        await asyncio.sleep(1.0)

    sink = run_output(script)
    assert {f.turn for f in sink.audio()} == {1, 2}
    assert sink.audio_ms(1) == pytest.approx(320.0)
    assert sink.audio_ms(2) == pytest.approx(200.0)
    assert "".join(f.text for f in sink.audio(2)) == "new reply"
    t2 = frame_times(sink, 2)
    # Reply 2 starts at once, not after what remained of reply 1's schedule.
    assert t2[0] - marks["commit"] <= 20 * MS
    gaps = [b - a for a, b in pairwise(t2)]
    assert gaps == pytest.approx([20 * MS] * 9, abs=TOL)
    done = sink.of_kind("turn.done")
    assert [d.turn for d in done] == [2]
    assert done[0].delivered_ms == pytest.approx(200.0)
    (cut,) = sink.of_kind("turn.interrupted")
    assert (cut.turn, cut.reason) == (1, "superseded")  # type: ignore[attr-defined]


def test_next_audio_after_a_clear_starts_immediately() -> None:
    marks: dict[str, int] = {}

    async def script(session: Session, sink: RecordingSink) -> None:
        marks["t0"] = session.now_ns()
        session.push(chunk(200))
        await asyncio.sleep(0.050)  # frames at 0, 20, 40 ms sent: the next one is due at 60
        session.push(ClearBuffer(turn=1))  # the client's "stop": reply 1 ends there
        marks["new"] = session.now_ns()
        session.push(TurnCommit(text="next question"))
        session.push(chunk(100))
        await asyncio.sleep(0.5)

    sink = run_output(script)
    times = frame_times(sink)
    assert len(times) == 3 + 5
    later = times[3:]
    # The old schedule is forgotten: the new audio starts now (50 ms), not at 60 ms.
    for i, t in enumerate(later):
        assert t == pytest.approx(marks["new"] + i * 20 * MS, abs=TOL), f"frame {i}"


def test_max_buffer_ms_refuses_audio_beyond_the_bound() -> None:
    async def script(session: Session, sink: RecordingSink) -> None:
        output = session.node("output")
        session.push(chunk(200))
        session.push(chunk(200))
        session.push(chunk(200))  # 600 > 500: refused whole
        # (The first frame went out the moment it arrived: 380 ms wait.)
        assert output.buffered_ms == pytest.approx(380.0)
        await asyncio.sleep(0.29)  # frames at 0, 20, ..., 280 ms sent: room again
        session.push(chunk(200))
        assert output.buffered_ms == pytest.approx(100.0 + 200.0)
        await asyncio.sleep(1.0)

    sink = run_output(script, max_buffer_ms=500.0)
    assert sink.audio_ms() == pytest.approx(600.0)


@pytest.mark.parametrize("frame_ms", [0.0, -20.0])
def test_a_frame_ms_that_makes_no_frames_is_refused_at_build(frame_ms: float) -> None:
    # A pipeline is validated when it is built. Today frame_ms=0 builds, then every
    # tts.audio chunk fails in on_event with ZeroDivisionError (frame_ms<0: garbled frames).
    with pytest.raises(BuildError, match="frame_ms"):
        output_pipeline(frame_ms=frame_ms)


def test_turn_done_waits_until_the_last_frame_has_played_even_with_lead() -> None:
    started: list[int] = []

    async def script(session: Session, sink: RecordingSink) -> None:
        started.append(session.now_ns())
        session.push(chunk(200, "two hundred"))
        session.push(TtsDone())
        await asyncio.sleep(1.0)

    sink = run_output(script, lead_ms=100.0)
    times = frame_times(sink)
    # Frames go out up to 100 ms ahead of their play time ...
    assert times[-1] == pytest.approx(started[0] + 80 * MS, abs=TOL)
    # ... but the reply is done only when the last frame has finished playing.
    (done_t,) = [t for t, ev in sink.records if isinstance(ev, TurnDone)]
    assert done_t == pytest.approx(started[0] + 200 * MS, abs=TOL)


def test_a_late_wake_up_is_caught_up_within_the_lead_not_carried_forward() -> None:
    """A busy event loop delays some frames; within the lead the schedule does not slip.

    The client still holds lead audio while the loop is blocked, so the frames due
    meanwhile go out at once when it wakes and the rest keep the original schedule.
    (A block longer than the lead does shift it: the client has run dry by then, and
    sending on the old schedule would leave it holding more than the lead.)
    """
    from rspp.testing import VirtualClock

    clock = VirtualClock()
    pipeline = output_pipeline(frame_ms=20.0, lead_ms=60.0)
    sink = RecordingSink()
    started: list[int] = []

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="question"))
            started.append(session.now_ns())
            session.push(chunk(1000))
            await asyncio.sleep(0.3)
            clock.advance(0.045)  # the loop is blocked for 45 ms (a CPU-heavy callback)
            await asyncio.sleep(1.5)

    clock.run(main())
    times = frame_times(sink)
    assert len(times) == 50
    start = started[0]
    # Frame i plays at start + 20 i ms and leaves up to 60 ms before that; after the
    # block the overdue frames go at once and the rest are back on the original schedule.
    # (The first three cannot leave before the reply starts.)
    late = [i for i, t in enumerate(times) if t > start + i * 20 * MS - 60 * MS + TOL][3:]
    assert late, "the block delayed some frames"
    assert max(late) <= 21, f"frames {late} stayed late"
    assert times[-1] == pytest.approx(start + 49 * 20 * MS - 60 * MS, abs=TOL)


def test_with_a_lead_wake_ups_fall_on_a_2_ms_grid_never_early_never_past_it() -> None:
    # Many calls' frames due at scattered instants share a wake-up when each rounds
    # its own up to a 2 ms grid of session time (the loop's iterations, not the frames,
    # were most of a server's CPU); the lead covers the delay.
    marks: dict[str, int] = {}

    async def script(session: Session, sink: RecordingSink) -> None:
        await asyncio.sleep(0.0013)  # off the grid
        marks["start"] = session.now_ns()
        session.push(chunk(200))
        await asyncio.sleep(0.5)

    sink = run_output(script, lead_ms=60.0)
    times = frame_times(sink)
    assert len(times) == 10
    start = marks["start"]
    for i, t in enumerate(times):
        scheduled = start + i * 20 * MS - 60 * MS  # due minus the lead
        if scheduled <= start:
            assert t == start  # within the lead: out at once, with the first
            continue
        assert t % (2 * MS) <= TOL or t % (2 * MS) >= 2 * MS - TOL, f"frame {i} off the grid"
        assert scheduled - TOL <= t < scheduled + 2 * MS
    assert sum(1 for i in range(len(times)) if start + i * 20 * MS - 60 * MS > start) == 6
