"""The turn manager node in a real pipeline (energy VAD, fake models), in virtual time."""

from __future__ import annotations

import itertools

from rspp.demo import DemoLine, demo_pipeline
from rspp.events import AudioOut, Event
from rspp.testing import RecordingSink, ScriptedCaller, run_virtual

REPLY = (
    "Let me tell you about it. It is a long story with many parts. "
    "The first part is about the weather. The second part is about the sea."
)
MS = 1_000_000


def call(lines: list[DemoLine], **overrides: object) -> tuple[RecordingSink, list[Event], object]:
    pipeline = demo_pipeline(lines, **overrides)  # type: ignore[arg-type]
    sink = RecordingSink()
    events: list[Event] = []

    async def main() -> object:
        async with pipeline.session(sinks={"client": sink}, observers=[events.append]) as s:
            await ScriptedCaller(s, sink, [line.utterance() for line in lines]).play()
        return s

    session = run_virtual(main())
    return sink, events, session


def test_a_backchannel_pauses_the_bot_which_resumes_where_it_stopped() -> None:
    lines = [
        DemoLine("Tell me a story.", REPLY),
        DemoLine("Uh-huh.", None, barge_in_after_ms=2000.0),
    ]
    sink, _events, _ = call(lines)
    frames = [(t, f) for t, f in sink.records if isinstance(f, AudioOut)]
    # Nothing lost, nothing repeated: the whole reply was heard, in order.
    assert "".join(f.text for _, f in frames) == REPLY
    assert [ev.kind for ev in sink.events].count("turn.interrupted") == 0
    # One gap in the audio: the pause while "uh-huh" was being judged.
    gaps = [(a, b) for (a, _), (b, _) in itertools.pairwise(frames) if b - a > 21 * MS]
    assert len(gaps) == 1
    paused = next(t for t, ev in sink.records if ev.kind == "control.pause")
    resumed = next(t for t, ev in sink.records if ev.kind == "control.resume")
    (gap_start, gap_end) = gaps[0]
    assert gap_start <= paused and resumed == gap_end  # playout restarts at the resume
    assert 300 * MS < resumed - paused < 1000 * MS


def test_a_real_interruption_cuts_the_bot_and_becomes_the_next_turn() -> None:
    lines = [
        DemoLine("Tell me a story.", REPLY),
        DemoLine("Stop, tell me about the sea.", "The sea is big.", barge_in_after_ms=2000.0),
    ]
    sink, _events, session = call(lines)
    (cut,) = [ev for ev in sink.events if ev.kind == "turn.interrupted"]
    heard = "".join(f.text for f in sink.audio(cut.turn))
    assert cut.heard_text == heard and REPLY.startswith(heard) and heard != REPLY
    history = session.conversation.history()  # type: ignore[attr-defined]
    assert [(m.role, m.text) for m in history] == [
        ("user", "Tell me a story."),
        ("assistant", heard.strip()),
        ("user", "Stop, tell me about the sea."),
        ("assistant", "The sea is big."),
    ]


def test_the_end_of_turn_predictor_shortens_the_silence() -> None:
    lines = [DemoLine("What time is it?", "Noon.")]
    slow = call(lines, turns={"speculate": False})[2]
    fast = call(lines, turns={"speculate": False, "predictor": "heuristic"})[2]
    (slow_lat,) = slow.turn_latencies  # type: ignore[attr-defined]
    (fast_lat,) = fast.turn_latencies  # type: ignore[attr-defined]
    # A question is a finished turn: 200 ms of silence instead of 500, once the final says so.
    assert slow_lat.endpoint_ms == 500.0
    assert fast_lat.endpoint_ms < slow_lat.endpoint_ms
    assert fast_lat.v2v_ms < slow_lat.v2v_ms
