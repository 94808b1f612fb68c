"""A session resumes from a snapshot plus the input after it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from rspp.demo import DEMO_SCRIPT, DemoLine, demo_pipeline
from rspp.events import AsrFinal, LlmDelta
from rspp.kernel import Pipeline, SessionSnapshot, SnapshotError
from rspp.testing import RecordingSink, ScriptedCaller, Utterance, run_virtual

from .helpers import make_pipeline


def utterances(lines: list[DemoLine]) -> list[Utterance]:
    return [
        Utterance(
            line.user, barge_in_after_ms=line.barge_in_after_ms, expects_reply=bool(line.reply)
        )
        for line in lines
    ]


async def converse(
    pipeline: Pipeline, script: list[Utterance], snapshot: SessionSnapshot | None = None
) -> tuple[dict[int, str], SessionSnapshot]:
    """Run a script; return the reply text of each turn and a snapshot taken at the end."""
    sink = RecordingSink()
    replies: dict[int, str] = {}

    def collect(ev: object) -> None:
        if isinstance(ev, LlmDelta):
            replies[ev.turn] = replies.get(ev.turn, "") + ev.text

    async with pipeline.session(
        "call-1", sinks={"client": sink}, observers=[collect], snapshot=snapshot
    ) as session:
        await ScriptedCaller(session, sink, script).play()
        snap = session.snapshot()
    return replies, snap


CALL = [
    DemoLine("Hello there.", "Hi! How can I help?"),
    DemoLine("What time is it in Tokyo?", "It is nine in the evening in Tokyo."),
    DemoLine("And in Paris?", "In Paris it is one in the afternoon."),
    DemoLine("Thanks, bye.", "Goodbye!"),
]


def test_a_conversation_resumes_from_a_snapshot_in_a_new_session() -> None:
    pipeline = demo_pipeline(CALL)
    whole, _ = run_virtual(converse(pipeline, utterances(CALL)))

    first, snap = run_virtual(converse(pipeline, utterances(CALL[:2])))
    # The snapshot crosses a process boundary as bytes.
    wire = msgspec.msgpack.encode(snap)
    restored = msgspec.msgpack.decode(wire, type=SessionSnapshot)
    assert restored.turns.epoch == 3 and restored.seq == snap.seq
    assert [m.text for m in restored.conversation.messages] == [
        CALL[0].user,
        CALL[0].reply,
        CALL[1].user,
        CALL[1].reply,
    ]
    rest, _ = run_virtual(converse(pipeline, utterances(CALL[2:]), snapshot=restored))

    assert set(first) == {1, 2}
    assert {**first, **rest} == whole
    assert sorted(whole.values()) == sorted(line.reply for line in CALL if line.reply)


def test_queued_and_in_flight_input_survive_a_snapshot() -> None:
    pipeline = make_pipeline(
        [
            {
                "name": "slow",
                "type": "slow_relay",
                "inputs": ["input"],
                "config": {"delay_ms": 100},
            },
            {"name": "sink", "type": "collect", "inputs": ["slow"]},
        ],
        inputs=("asr.final",),
    )

    async def first() -> SessionSnapshot:
        async with pipeline.session("s") as session:
            session.push(AsrFinal(text="a"))
            await asyncio.sleep(0.01)  # "a" is in flight
            session.push(AsrFinal(text="queued"))
            snap = session.snapshot()
            assert list(snap.pending) == ["slow"] and "slow" in snap.in_flight
            return snap

    async def second(snap: SessionSnapshot) -> list[str]:
        async with pipeline.session(snapshot=snap) as session:
            assert session.id == "s"
            await asyncio.sleep(0.5)
            return [ev.text for ev in session.node("sink").seen]

    snap = run_virtual(first())
    # The input the node was in the middle of is handed to it again, then what was queued.
    assert run_virtual(second(snap)) == ["a", "queued"]


def test_a_snapshot_of_another_pipeline_is_refused() -> None:
    pipeline = demo_pipeline()
    _, snap = run_virtual(converse(pipeline, utterances(DEMO_SCRIPT[:1])))
    other = make_pipeline([{"name": "p", "type": "passthrough", "inputs": ["input"]}])

    async def main() -> None:
        with pytest.raises(SnapshotError, match="snapshot of pipeline 'demo', not 'test'"):
            async with other.session(snapshot=snap):
                pass

    run_virtual(main())
