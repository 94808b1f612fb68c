"""Sessions: stamping, routing, lanes, overload, failures, lifecycle. All in virtual time."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rspp.events import (
    AsrPartial,
    AudioIn,
    ClearBuffer,
    Error,
    Event,
    LlmDelta,
    SessionEnd,
    TurnCommit,
    TurnDone,
    TurnInterrupted,
    UnknownEvent,
)
from rspp.kernel import InvalidInput, SessionClosed
from rspp.testing import RecordingSink, run_virtual

from .helpers import make_pipeline
from .toy_nodes import Burst, Collect, SlowRelay, StubbornRun

FRAME = b"\x01\x00" * 320  # 20 ms at 16 kHz


def chain(n: int, *, queued_at: int | None = None) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = []
    upstream = "input"
    for i in range(n):
        name = f"p{i}"
        node: dict[str, object] = {"name": name, "type": "passthrough", "inputs": [upstream]}
        if queued_at == i:
            node["queued"] = True
        nodes.append(node)
        upstream = name
    nodes.append({"name": "sink", "type": "collect", "inputs": [upstream]})
    return nodes


def test_inline_chain_delivers_in_order_and_stamps_headers() -> None:
    pipeline = make_pipeline(chain(5))

    async def main() -> list[Event]:
        async with pipeline.session("s-1") as session:
            for _ in range(3):
                session.push(AudioIn(pcm=FRAME))
            seen = list(session.node("sink").seen)
            # Inline dispatch is synchronous: delivered before push() returned.
            assert len(seen) == 3
            return seen

    seen = run_virtual(main())
    assert [ev.seq for ev in seen] == sorted(ev.seq for ev in seen)
    assert len({ev.seq for ev in seen}) == 3
    assert all(ev.session == "s-1" and ev.turn == 1 and ev.origin_ns > 0 for ev in seen)


def test_queued_node_delivers_after_a_task_switch_in_order() -> None:
    pipeline = make_pipeline(chain(3, queued_at=1))

    async def main() -> None:
        async with pipeline.session() as session:
            for _ in range(10):
                session.push(AudioIn(pcm=FRAME))
            sink: Collect = session.node("sink")
            assert sink.seen == []  # behind p1's inbox
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert len(sink.seen) == 10
            assert [ev.seq for ev in sink.seen] == sorted(ev.seq for ev in sink.seen)

    run_virtual(main())


def test_fresh_events_inherit_turn_and_origin_from_their_cause() -> None:
    pipeline = make_pipeline(
        [
            {"name": "answer", "type": "stamp_check", "inputs": ["input"]},
            {"name": "sink", "type": "collect", "inputs": ["answer"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        async with pipeline.session("s") as session:
            commit = TurnCommit(text="hi", origin_ns=123_456)
            session.push(commit)
            (delta,) = session.node("sink").seen
            assert isinstance(delta, LlmDelta)
            assert delta.turn == commit.turn == 1
            assert delta.origin_ns == 123_456  # a transport-supplied capture time is kept
            assert delta.seq == commit.seq + 1
            assert delta.session == "s"

    run_virtual(main())


def test_unknown_kinds_pass_through_nodes_that_do_not_consume_them() -> None:
    pipeline = make_pipeline(
        [
            {"name": "vad", "type": "energy_vad", "inputs": ["input"]},
            {"name": "sink", "type": "collect", "inputs": ["vad"]},
        ],
        inputs=("audio.in", "x.future"),
    )

    async def main() -> None:
        async with pipeline.session() as session:
            future = UnknownEvent(kind="x.future", fields={"payload": [1, 2, 3]})
            session.push(future)
            session.push(AudioIn(pcm=FRAME))
            seen = session.node("sink").seen
            # The VAD consumes audio.in (and emits nothing for one quiet frame); the
            # unknown kind went past it untouched.
            assert seen == [future]
            assert seen[0].fields == {"payload": [1, 2, 3]}

    run_virtual(main())


def test_push_rejects_bad_input_with_a_clear_error_and_carries_on() -> None:
    pipeline = make_pipeline(chain(1))

    async def main() -> None:
        async with pipeline.session() as session:
            with pytest.raises(InvalidInput, match="44100 Hz"):
                session.push(AudioIn(pcm=FRAME, sample_rate=44100))
            with pytest.raises(InvalidInput, match="whole PCM16"):
                session.push(AudioIn(pcm=b"\x00\x01\x02"))
            with pytest.raises(InvalidInput, match="not an input kind"):
                session.push(LlmDelta(text="x"))
            session.push(AudioIn(pcm=FRAME))
            assert len(session.node("sink").seen) == 1
            assert session.stats.rejected == {"audio_format": 2, "input_kind": 1}
        with pytest.raises(SessionClosed):
            session.push(AudioIn(pcm=FRAME))

    run_virtual(main())


def test_input_audio_never_accumulates_latency_behind_a_slow_node() -> None:
    pipeline = make_pipeline(
        [
            {
                "name": "slow",
                "type": "slow_relay",
                "inputs": ["input"],
                "config": {"delay_ms": 100},
                "queue": {"capacity": 4},
            },
            {"name": "sink", "type": "collect", "inputs": ["slow"]},
        ]
    )

    async def main() -> None:
        async with pipeline.session() as session:
            pushed = []
            for _ in range(50):  # 1 s of audio while the node handles one frame per 100 ms
                frame = AudioIn(pcm=FRAME)
                session.push(frame)
                pushed.append(frame)
                await asyncio.sleep(0.02)
            slow: SlowRelay = session.node("slow")
            assert len(session.runner("slow").inbox) <= 4
            dropped = session.stats.drops[("slow", "audio.in", "dropped_oldest")]
            assert dropped == 50 - len(slow.handled) - len(session.runner("slow").inbox)
            assert dropped > 30
            # What waits for the node is the newest audio, not audio from a second ago.
            assert list(session.runner("slow").inbox) == pushed[-4:]
            # And each frame the node took was at most one handling time plus a full
            # inbox (4 frames) old when it was taken.
            for earlier, later in zip(slow.handled, slow.handled[1:], strict=False):
                taken_ns = earlier.origin_ns + 100_000_000  # at most when its predecessor ended
                assert later.origin_ns >= taken_ns - 100_000_000 - 4 * 20_000_000

    run_virtual(main())


def test_latest_policy_keeps_only_the_newest_partial_queued() -> None:
    pipeline = make_pipeline(
        [
            {
                "name": "slow",
                "type": "slow_relay",
                "inputs": ["input"],
                "config": {"delay_ms": 50},
            },
            {"name": "sink", "type": "collect", "inputs": ["slow"]},
        ],
        inputs=("asr.partial",),
    )

    async def main() -> None:
        async with pipeline.session() as session:
            session.push(AsrPartial(text="a"))
            await asyncio.sleep(0.01)  # the node takes "a" and works on it for 50 ms
            for text in ["a b", "a b c", "a b c d"]:
                session.push(AsrPartial(text=text))
            await asyncio.sleep(1)
            texts = [ev.text for ev in session.node("sink").seen]
            # The first is taken at once; of the three queued behind it only the newest stays.
            assert texts == ["a", "a b c d"]
            assert session.stats.drops[("slow", "asr.partial", "replaced")] == 2

    run_virtual(main())


def test_block_policy_stops_pulling_a_fast_stream_instead_of_dropping() -> None:
    pipeline = make_pipeline(
        [
            {"name": "gen", "type": "burst", "inputs": ["input"], "config": {"count": 40}},
            {
                "name": "slow",
                "type": "slow_relay",
                "inputs": ["gen"],
                "config": {"delay_ms": 10},
                "queue": {"capacity": 3},
            },
            {"name": "sink", "type": "collect", "inputs": ["slow"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        async with pipeline.session() as session:
            session.push(TurnCommit(text="go"))
            gen: Burst = session.node("gen")
            inbox = session.runner("slow").inbox
            high_water = 0
            while len(session.node("sink").seen) < 40:
                high_water = max(high_water, len(inbox))
                # The producer runs ahead by at most what fits in the inbox (+1 over).
                assert gen.pulled <= len(session.node("sink").seen) + 3 + 2
                await asyncio.sleep(0.001)
            assert high_water <= 4
            assert session.stats.dropped() == 0
            texts = [ev.text for ev in session.node("sink").seen]
            assert texts == [f"{i} " for i in range(40)]

    run_virtual(main())


def test_a_failing_node_is_contained_reported_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = make_pipeline(
        [
            {"name": "gen", "type": "fail_stream", "inputs": ["input"]},
            {"name": "check", "type": "fail_inline", "inputs": ["gen"]},
            {"name": "sink", "type": "collect", "inputs": ["check"]},
        ],
        inputs=("turn.commit",),
    )
    errors: list[Error] = []

    async def main() -> None:
        async with pipeline.session() as session:
            session.observe(lambda ev: errors.append(ev) if isinstance(ev, Error) else None)
            session.push(TurnCommit(text="boom"))  # the stream raises after its first item
            await asyncio.sleep(0.01)
            session.push(TurnCommit(text="fine"))
            await asyncio.sleep(0.01)
            texts = [ev.text for ev in session.node("sink").seen]
            assert texts == ["first ", "first ", "second "]
            assert session.stats.errors == {"gen": 1}
            assert errors[0].source == "gen" and errors[0].code == "RuntimeError"
            assert errors[0].turn == 1

    with caplog.at_level(logging.ERROR):
        run_virtual(main())
    assert "stream node failed on purpose" in caplog.text


def test_an_inline_failure_on_a_reply_ends_that_reply_and_the_next_one_works() -> None:
    pipeline = make_pipeline(
        [
            {"name": "gen", "type": "burst", "inputs": ["input"], "config": {"count": 3}},
            {
                "name": "check",
                "type": "fail_inline",
                "inputs": ["gen"],
                "config": {"fail_on": "1 "},
            },
            {"name": "sink", "type": "collect", "inputs": ["check"]},
        ],
        inputs=("turn.commit",),
    )
    ended: list[TurnInterrupted] = []

    async def main() -> None:
        async with pipeline.session() as session:
            session.observe(
                lambda ev: ended.append(ev) if isinstance(ev, TurnInterrupted) else None
            )
            for _ in range(2):
                session.push(TurnCommit(text="go"))
                await asyncio.sleep(0.01)
            # A node that raised on "1 " cannot have produced a complete reply: the kernel
            # ended it there (nothing after it moved), and the next reply started cleanly.
            assert [ev.text for ev in session.node("sink").seen] == ["0 ", "0 "]
            assert [(ev.turn, ev.reason) for ev in ended] == [(1, "failed"), (2, "failed")]
            assert session.stats.errors == {"check": 2}
            assert session.stats.replies == {"failed": 2}
            assert session.stats.drops[("gen", "llm.delta", "fenced")] == 2
            assert session.running and session.turns.state.value == "listening"

    run_virtual(main())


def test_no_task_outlives_its_session_even_a_stubborn_one() -> None:
    pipeline = make_pipeline(
        [
            {"name": "gen", "type": "burst", "inputs": ["input"], "config": {"interval_ms": 50}},
            {"name": "slow", "type": "slow_relay", "inputs": ["gen"]},
            {"name": "stubborn", "type": "stubborn_run", "inputs": ["input"]},
            {"name": "sink", "type": "collect", "inputs": ["slow"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        before = asyncio.all_tasks()
        session = pipeline.session()
        async with session:
            session.push(TurnCommit(text="go"))
            await asyncio.sleep(0.12)  # mid-stream, with work queued and in flight
            assert len(session.tasks) == 3  # two workers and one run() body
            assert all(not t.done() for t in session.tasks)
        assert all(t.done() for t in session.tasks)
        assert asyncio.all_tasks() == before
        stubborn: StubbornRun = session.node("stubborn")
        assert stubborn.swallowed == 1

    run_virtual(main())


def test_timers_die_with_the_session() -> None:
    fired: list[int] = []
    pipeline = make_pipeline(chain(1))

    async def main() -> None:
        async with pipeline.session() as session:
            runner = session.runner("p0")
            runner.call_later(0.5, fired.append, 1)
            runner.call_later(5.0, fired.append, 2)
            await asyncio.sleep(1)
        await asyncio.sleep(10)

    run_virtual(main())
    assert fired == [1]


def test_control_events_reach_listeners_and_sinks_synchronously() -> None:
    pipeline = make_pipeline(
        [
            {
                "name": "slow",
                "type": "slow_relay",
                "inputs": ["input"],
                "config": {"delay_ms": 1000},
            },
            {"name": "out", "type": "audio_output", "inputs": ["slow"], "sink": "client"},
        ],
        inputs=("turn.commit", "tts.audio", "tts.done"),
    )
    from rspp.events import TtsAudio

    async def main() -> None:
        sink = RecordingSink()
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="hi"))
            for _ in range(20):
                session.push(TtsAudio(pcm=FRAME))
            inbox = session.runner("slow").inbox
            assert len(inbox) == 21  # the commit and 20 chunks, behind a node that takes 1 s each
            # A client's "stop" is not queued behind them: before push() returns, it has
            # reached the client, the reply it cut is over and its queued audio is gone.
            session.push(ClearBuffer())
            kinds = [ev.kind for ev in sink.events]
            assert kinds[-3:] == [
                "control.clear_buffer",
                "control.clear_buffer",
                "turn.interrupted",
            ]
            assert sink.events[-1].reason == "cleared"  # type: ignore[attr-defined]
            assert len(inbox) == 0
            assert session.stats.drops[("slow", "tts.audio", "fenced")] == 20

    run_virtual(main())


def test_a_shared_sink_sees_events_in_seq_order_through_inline_cascades() -> None:
    pipeline = make_pipeline(
        [
            {"name": "p", "type": "passthrough", "inputs": ["input"], "sink": "client"},
            {"name": "answer", "type": "stamp_check", "inputs": ["p"], "sink": "client"},
        ],
        inputs=("turn.commit",),
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="hi"))
            # Forwarding the commit did not commit the turn a second time.
            assert session.stats.rejected == {}
            assert session.turns.epoch == 2
        kinds = [ev.kind for ev in sink.events]
        assert kinds[1:3] == ["turn.commit", "llm.delta"]  # cause before effect
        seqs = [ev.seq for ev in sink.events]
        assert seqs == sorted(seqs)

    run_virtual(main())


def test_a_client_cannot_push_the_kernels_own_control_events() -> None:
    pipeline = make_pipeline(chain(1))

    async def main() -> None:
        async with pipeline.session() as session:
            for event in (TurnDone(turn=1), TurnInterrupted(turn=1), SessionEnd()):
                with pytest.raises(InvalidInput, match="cannot be sent"):
                    session.push(event)
            assert session.stats.rejected == {"input_kind": 3}
            session.push(ClearBuffer())  # a client's "stop talking" is fine

    run_virtual(main())
