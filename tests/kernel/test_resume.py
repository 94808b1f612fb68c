"""Resumable at any moment: snapshots mid-reply, session time, numbering, identity, playback.

A snapshot taken in the middle of a reply -- the LLM mid-stream, the TTS mid-piece,
audio buffered at the output, timers pending -- and restored into a fresh session
on a clock with another origin continues the call: the reply goes on from exactly
where the user was, nothing is heard twice, nothing is lost, and the session is
not left RESPONDING.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec
import pytest

from rspp.events import AsrFinal, AudioOut, Interrupt, PlaybackPosition, TurnCommit
from rspp.kernel import Pipeline, SessionSnapshot, SnapshotError
from rspp.testing import RecordingSink, VirtualClock

from .helpers import barge_in_pipeline, make_pipeline

REPLY = " ".join(f"Sentence {i} goes on for a while." for i in range(6))


def pipeline_for(**llm: Any) -> Pipeline:
    return barge_in_pipeline(
        llm={"replies": [REPLY, "Second reply."], "ttft_ms": 100, "tokens_per_s": 8, **llm},
        tts={"ttfa_ms": 50, "rtf": 0.3, "chunk_ms": 100},
        output={"lead_ms": 40},
    )


def wire(snap: SessionSnapshot) -> SessionSnapshot:
    """Through the bytes a worker would store."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=SessionSnapshot)


def first_part(pipeline: Pipeline, until_frames: int) -> tuple[SessionSnapshot, RecordingSink]:
    """Play reply 1 until ``until_frames`` frames were sent, snapshot, and stop there."""
    sink = RecordingSink()

    async def main() -> tuple[SessionSnapshot, RecordingSink]:
        async with pipeline.session("call", sinks={"client": sink}) as session:
            session.push(TurnCommit(text="tell me"))
            await sink.wait_for(lambda: len(sink.audio(1)) >= until_frames)
            snap = session.snapshot()
            sent = RecordingSink()
            sent.records = list(sink.records)  # what the client had when the owner stopped
            return snap, sent

    return VirtualClock(start=1000.0).run(main())


def second_part(
    pipeline: Pipeline, snap: SessionSnapshot, *, start: float = 5000.0, **kwargs: Any
) -> tuple[RecordingSink, Any]:
    sink = RecordingSink()

    async def main() -> Any:
        async with pipeline.session(sinks={"client": sink}, snapshot=snap, **kwargs) as session:
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))
            await asyncio.sleep(0.5)
            assert session.turns.state.value == "listening"  # not stuck RESPONDING
            return session

    return sink, VirtualClock(start=start).run(main())


def uninterrupted(pipeline: Pipeline) -> RecordingSink:
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session("call", sinks={"client": sink}) as session:
            session.push(TurnCommit(text="tell me"))
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))

    VirtualClock(start=1000.0).run(main())
    return sink


@pytest.mark.parametrize("frames", [1, 7, 40, 120])
def test_a_mid_reply_snapshot_continues_the_reply_where_the_user_was(frames: int) -> None:
    pipeline = pipeline_for()
    whole = uninterrupted(pipeline)
    snap, before = first_part(pipeline, frames)
    assert snap.turns.state == "responding" and snap.turns.active == 1
    after, session = second_part(pipeline, wire(snap))
    frames_before, frames_after = before.audio(1), after.audio(1)
    # Nothing heard twice, nothing lost: the two halves are exactly the whole reply.
    assert "".join(f.text for f in frames_before + frames_after) == REPLY
    assert b"".join(f.pcm for f in frames_before + frames_after) == whole.pcm()
    # The reply ended (played) and the call goes on: not stuck RESPONDING.
    (done,) = after.of_kind("turn.done")
    assert done.turn == 1
    assert session.stats.replies == {"played": 1}
    assert [(m.role, m.text) for m in session.conversation.history()] == [
        ("user", "tell me"),
        ("assistant", REPLY),
    ]
    # Output of the new incarnation comes after everything the old one sent.
    assert all(ev.inc == snap.incarnation + 1 for ev in after.events)
    assert after.events[0].pos == snap.pos + 1
    assert {ev.inc for ev in before.events} == {snap.incarnation}


def test_the_restored_reply_keeps_its_pace_on_a_clock_with_another_origin() -> None:
    pipeline = pipeline_for()
    whole = uninterrupted(pipeline)
    snap, before = first_part(pipeline, 30)
    after, _ = second_part(pipeline, wire(snap), start=77_000.0, resume_at_ns=snap.clock_ns)
    # Session time continued from the snapshot's: the frames keep the schedule the
    # uninterrupted call had, in session time, although this loop's clock began elsewhere.
    times = [t for t, ev in whole.records if isinstance(ev, AudioOut)]
    offset = 77_000 * 10**9 - snap.clock_ns  # loop time = session time + offset
    resumed = [t - offset for t, ev in after.records if isinstance(ev, AudioOut)]
    assert resumed == pytest.approx(times[len(before.audio(1)) :], abs=60_000_000)
    assert all(ev.origin_ns < snap.clock_ns + 60 * 10**9 for ev in after.audio(1))


def test_a_snapshot_while_a_speculation_is_held_stays_held_and_can_be_confirmed() -> None:
    from .toy_nodes import Direct

    pipeline = make_pipeline(
        [
            {"name": "director", "type": "director", "inputs": ["input"]},
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["director"],
                "config": {"replies": [REPLY], "ttft_ms": 50, "tokens_per_s": 20},
            },
            {"name": "tts", "type": "fake_tts", "inputs": ["llm"], "config": {"ttfa_ms": 20}},
            {"name": "output", "type": "audio_output", "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("test.direct",),
    )

    async def first() -> SessionSnapshot:
        async with pipeline.session("s", sinks={"client": RecordingSink()}) as session:
            session.push(Direct(action="speculate", text="x"))
            await asyncio.sleep(1.0)  # generating, held
            return session.snapshot()

    snap = VirtualClock().run(first())
    assert snap.turns.state == "speculating"
    sink = RecordingSink()

    async def second() -> None:
        async with pipeline.session(sinks={"client": sink}, snapshot=wire(snap)) as session:
            await asyncio.sleep(2.0)
            assert sink.audio() == []  # still held: nothing of it was ever heard
            session.push(Direct(action="confirm", target=snap.turns.active))
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))

    VirtualClock(start=9000.0).run(second())
    assert "".join(f.text for f in sink.audio()) == REPLY


def test_a_node_that_cannot_resume_ends_the_reply_where_the_user_stopped_hearing_it() -> None:
    # A relay that is not resumable sits between the LLM and the TTS: in the middle of
    # an event of the reply when the snapshot is taken, it would start over.
    pipeline = barge_in_pipeline(
        llm={"replies": [REPLY, "Second."], "ttft_ms": 50, "tokens_per_s": 8},
        tts={"ttfa_ms": 10, "rtf": 0.1, "chunk_ms": 100},
        relay_ms=200.0,
    )
    snap, before = first_part(pipeline, 60)
    assert "relay" in snap.in_flight
    sink = RecordingSink()

    async def main() -> Any:
        async with pipeline.session(sinks={"client": sink}, snapshot=wire(snap)) as session:
            await asyncio.sleep(1.0)
            session.push(TurnCommit(text="and then?"))  # the next turn works
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))
            return session

    session = VirtualClock(start=3000.0).run(main())
    (cut,) = sink.of_kind("turn.interrupted")
    heard = "".join(f.text for f in before.audio(1))
    assert heard and len(heard) < len(REPLY)
    assert (cut.turn, cut.reason, cut.heard_text) == (1, "moved", heard)  # type: ignore[attr-defined]
    # The relay's queued and in-flight text of the cut reply did not come back to life.
    assert "".join(f.text for f in sink.audio(1)) == ""
    assert session.stats.replies == {"moved": 1, "played": 1}
    assistant = [m for m in session.conversation.history() if m.role == "assistant"]
    assert assistant[0].text == heard.strip() and assistant[0].interrupted


def test_numbering_continues_across_incarnations_and_input_replay_is_idempotent() -> None:
    pipeline = make_pipeline(
        [{"name": "sink", "type": "collect", "inputs": ["input"]}], inputs=("asr.final",)
    )
    log = [AsrFinal(text=f"line {i}") for i in range(1, 7)]  # an input log, seq 1..6

    async def first() -> SessionSnapshot:
        async with pipeline.session("s") as session:
            for seq, ev in enumerate(log[:4], 1):
                assert session.push(msgspec.structs.replace(ev), seq=seq)
            return session.snapshot()

    snap = VirtualClock().run(first())
    assert (snap.input_seq, snap.incarnation) == (4, 1)

    async def second() -> list[str]:
        async with pipeline.session(snapshot=wire(snap), incarnation=5) as session:
            assert session.incarnation == 5
            # A new owner replays the log from an earlier point: what the snapshot has
            # already seen is ignored, the rest is applied once.
            applied = [
                session.push(msgspec.structs.replace(ev), seq=seq) for seq, ev in enumerate(log, 1)
            ]
            assert applied == [False] * 4 + [True] * 2
            assert session.stats.rejected["duplicate"] == 4
            assert session.push(msgspec.structs.replace(log[5]), seq=6) is False
            assert session.input_seq == 6 and session.seq > snap.seq
            return [ev.text for ev in session.node("sink").seen]

    assert VirtualClock().run(second()) == ["line 5", "line 6"]


def test_a_snapshot_that_does_not_fit_is_refused_with_every_reason() -> None:
    pipeline = pipeline_for()
    snap, _ = first_part(pipeline, 3)
    bad = msgspec.structs.replace(
        snap,
        pipeline_version=snap.pipeline_version + 1,
        nodes={
            **{("speaker" if k == "output" else k): v for k, v in snap.nodes.items()},
            "tts": msgspec.structs.replace(snap.nodes["tts"], state=b"\x93garbage"),
        },
    )

    async def main() -> None:
        with pytest.raises(SnapshotError) as refused:
            async with pipeline.session(sinks={"client": RecordingSink()}, snapshot=bad):
                pass
        problems = refused.value.problems
        assert any("version 2" in p and "version 1" in p for p in problems)
        assert any("'speaker'" in p and "not in the pipeline" in p for p in problems)
        assert any("'output' is not in the snapshot" in p for p in problems)
        assert any("'tts'" in p and "does not validate" in p for p in problems)

    VirtualClock().run(main())


def test_heard_means_played_when_the_client_reports_playback() -> None:
    # The output runs 300 ms ahead of real time (a network between it and the ear);
    # the client reports what it has actually played, and an interruption cuts the
    # reply -- and the history -- at that, not at what was sent.
    pipeline = barge_in_pipeline(
        llm={"replies": [REPLY, "Ok."], "ttft_ms": 20, "tokens_per_s": 50},
        tts={"ttfa_ms": 10, "rtf": 0.05, "chunk_ms": 100},
        output={"lead_ms": 300},
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="tell me"))
            await sink.wait_for(lambda: sink.audio_ms(1) >= 1500)
            played_ms = sink.audio_ms(1) - 300  # the client is 300 ms behind what it got
            session.push(PlaybackPosition(played_ms=played_ms))
            session.push(Interrupt())
            (cut,) = sink.of_kind("turn.interrupted")
            frames = sink.audio(1)
            ends = [sum(f.duration_ns for f in frames[: i + 1]) for i in range(len(frames))]
            played = "".join(
                f.text for f, end in zip(frames, ends, strict=True) if end <= played_ms * 1e6
            )
            sent = "".join(f.text for f in frames)
            assert len(played) < len(sent)
            assert cut.heard_text == played  # type: ignore[attr-defined]
            assert cut.delivered_ms == pytest.approx(played_ms)  # type: ignore[attr-defined]
            (message,) = [m for m in session.conversation.history() if m.role == "assistant"]
            assert message.text == played.strip()

    VirtualClock().run(main())


# -- a hot swap: another pipeline at a turn boundary --------------------------------------


def _between_turns() -> SessionSnapshot:
    sink = RecordingSink()

    async def main() -> SessionSnapshot:
        async with pipeline_for().session("call", sinks={"client": sink}) as session:
            session.push(TurnCommit(text="tell me"))
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))
            await asyncio.sleep(0.2)
            assert session.turns.state.value == "listening"
            return session.snapshot()

    return wire(VirtualClock(start=1000.0).run(main()))


def test_a_session_swapped_to_another_pipeline_keeps_its_conversation_and_numbers() -> None:
    snap = _between_turns()
    upgraded = barge_in_pipeline(  # another LLM config, another voice, an extra node
        llm={"replies": [REPLY, "Upgraded second reply."], "ttft_ms": 20, "tokens_per_s": 50},
        tts={"ttfa_ms": 10, "rtf": 0.1, "chunk_ms": 40},
        output={"lead_ms": 40},
        relay_ms=5.0,
    )
    sink = RecordingSink()

    async def main() -> Any:
        async with upgraded.session(sinks={"client": sink}, snapshot=snap, swap=True) as session:
            session.push(TurnCommit(text="and now?"))
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))
            return session

    session = VirtualClock(start=9000.0).run(main())
    history = [(m.role, m.text) for m in session.conversation.history()]
    assert history[:2] == [("user", "tell me"), ("assistant", REPLY)]
    assert history[2:] == [("user", "and now?"), ("assistant", "Upgraded second reply.")]
    (done,) = sink.of_kind("turn.done")
    assert done.turn == snap.turns.fence + 1 == 2  # the turn counter went on
    assert {ev.inc for ev in sink.events} == {snap.incarnation + 1}
    assert sink.events[0].pos == snap.pos + 1


def test_a_swap_mid_reply_is_refused_and_a_plain_restore_of_another_pipeline_too() -> None:
    mid, _ = first_part(pipeline_for(), until_frames=5)
    other = barge_in_pipeline(llm={"replies": ["x"]}, relay_ms=1.0)

    def start(**kwargs: Any) -> None:
        async def main() -> None:
            async with other.session(sinks={"client": RecordingSink()}, snapshot=mid, **kwargs):
                pass

        VirtualClock(start=10.0).run(main())

    with pytest.raises(SnapshotError, match="turn boundary"):
        start(swap=True)
    with pytest.raises(SnapshotError, match="not in the snapshot"):
        start()


def test_frames_a_client_already_has_from_a_previous_owner_are_sent_at_once() -> None:
    """A cluster's takeover: the audio output is told how many frames past the snapshot
    the client already received; it sends those without pacing (they are dropped
    downstream as repeats), then paces the rest as before."""
    from rspp.cluster.owned import _tell_outputs

    pipeline = pipeline_for()
    snap, _ = first_part(pipeline, until_frames=5)
    _tell_outputs(snap, {snap.turns.active: 10})
    sink, _ = second_part(pipeline, wire(snap))
    times = [at for at, ev in sink.records if ev.kind == "audio.out"]
    assert len(times) > 20
    first, rest = times[:10], times[10:]
    # Ten frames (200 ms of audio) as fast as the TTS makes them, not in 200 ms of pacing.
    assert max(first) - min(first) < 100_000_000
    assert first[:5] == [first[0]] * 5  # those already buffered: all at the same instant
    gaps = [b - a for a, b in itertools.pairwise(rest[2:])]
    assert min(gaps) > 10_000_000  # then paced again (20 ms frames, a small lead)
