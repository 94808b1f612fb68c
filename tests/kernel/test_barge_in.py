"""Barge-in enforced by the kernel: deterministic scenarios in virtual time."""

from __future__ import annotations

import asyncio

from rspp.events import (
    AudioOut,
    Cancel,
    ClearBuffer,
    Event,
    Interrupt,
    TurnCommit,
    TurnDone,
    TurnInterrupted,
)
from rspp.testing import FakeLlm, FakeTts, RecordingSink, run_virtual, tick
from rspp.testing.fakes import FakeLlmStream

from .helpers import barge_in_pipeline, make_pipeline

LONG_REPLY = " ".join(f"This is sentence number {i} of a very long answer." for i in range(40))


def produced_after(log: list[tuple[int, int]], moment: int, turn: int) -> int:
    return sum(1 for t, tr in log if t > moment and tr <= turn)


def test_interrupt_with_ten_seconds_buffered_and_llm_mid_stream() -> None:
    pipeline = barge_in_pipeline(
        llm={"ttft_ms": 100, "tokens_per_s": 20, "replies": [LONG_REPLY]},
        tts={"ttfa_ms": 10, "rtf": 0.01, "chunk_ms": 200},
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="tell me everything"))
            await asyncio.sleep(3.0)
            output = session.node("output")
            llm: FakeLlm = session.node("llm")
            tts: FakeTts = session.node("tts")
            (stream,) = llm.streams
            assert output.buffered_ms >= 10_000, "the scenario needs 10 s buffered"
            assert 0 < len(stream.produced) < len(stream.tokens), "the LLM must be mid-stream"
            frames_before = len(sink.audio(1))
            assert frames_before > 0

            loop = asyncio.get_running_loop()
            t_interrupt = loop.time()
            moment = tick()
            session.push(Interrupt())
            # Synchronously, before push() returned: output silent, client told, turn recorded.
            assert output.buffered_ms == 0
            kinds = [ev.kind for ev in sink.events[-3:]]
            assert kinds == ["control.interrupt", "control.clear_buffer", "turn.interrupted"]
            record = sink.events[-1]
            assert isinstance(record, TurnInterrupted) and record.turn == 1
            assert record.delivered_ms == sink.audio_ms(1)
            assert record.heard_text == "".join(f.text for f in sink.audio(1))
            assert LONG_REPLY.startswith(record.heard_text)
            assert 0 < len(record.heard_text) < len(LONG_REPLY) // 4

            await asyncio.sleep(0)  # the LLM's task runs its cancellation
            assert stream.closed and stream.closed_at == t_interrupt

            await asyncio.sleep(5.0)
            assert len(sink.audio(1)) == frames_before, "stale audio reached the client"
            assert produced_after(stream.produced, moment, 1) == 0
            assert produced_after(tts.produced, moment, 1) <= 1
            assert session.stats.dropped("fenced") > 0
            assert not [ev for ev in sink.events if isinstance(ev, TurnDone)]

    run_virtual(main())


def test_the_next_turn_plays_normally_after_an_interrupt() -> None:
    pipeline = barge_in_pipeline(
        llm={"ttft_ms": 50, "tokens_per_s": 50, "replies": [LONG_REPLY, "Short answer."]},
        tts={"ttfa_ms": 20, "rtf": 0.1},
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="first"))
            await asyncio.sleep(1.0)
            session.push(Interrupt())
            session.push(TurnCommit(text="second"))  # the barge-in's transcript: turn 2
            await asyncio.sleep(3.0)
            done = [ev for ev in sink.events if isinstance(ev, TurnDone)]
            assert [d.turn for d in done] == [2]
            assert "".join(f.text for f in sink.audio(2)) == "Short answer."
            assert done[0].delivered_ms == sink.audio_ms(2)
            # Playout of turn 2 started at once, not after the old schedule of turn 1.
            first_t2 = next(
                t for t, ev in sink.records if isinstance(ev, AudioOut) and ev.turn == 2
            )
            interrupt_t = next(t for t, ev in sink.records if isinstance(ev, Interrupt))
            assert first_t2 - interrupt_t < 200_000_000

    run_virtual(main())


def test_an_interrupt_with_nothing_playing_is_ignored() -> None:
    pipeline = barge_in_pipeline(llm={"ttft_ms": 50, "replies": ["Hello there."]})
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(Interrupt())
            session.push(TurnCommit(text="hi"))
            await asyncio.sleep(3.0)  # the reply plays out completely
            session.push(Interrupt())  # the user speaks again: nothing to interrupt
            await asyncio.sleep(0.1)
            kinds = [ev.kind for ev in sink.events if ev.kind.startswith(("turn.", "control."))]
            assert kinds == ["control.interrupt", "turn.done", "control.interrupt"]
            # Reply 1 is over (played out), so it is fenced; nothing was interrupted.
            assert session.fence == 1
            assert session.stats.replies == {"played": 1}

    run_virtual(main())


def test_a_new_commit_supersedes_the_reply_in_progress() -> None:
    pipeline = barge_in_pipeline(
        llm={"ttft_ms": 50, "tokens_per_s": 20, "replies": [LONG_REPLY, "Second."]}
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="one"))
            await asyncio.sleep(1.0)
            session.push(TurnCommit(text="two"))
            record = sink.events[-1]
            assert isinstance(record, TurnInterrupted)
            assert record.turn == 1 and record.reason == "superseded"
            await asyncio.sleep(3.0)
            assert "".join(f.text for f in sink.audio(2)) == "Second."
            llm: FakeLlm = session.node("llm")
            assert llm.streams[0].closed

    run_virtual(main())


def test_cancel_from_a_client_fences_the_reply() -> None:
    pipeline = barge_in_pipeline(llm={"ttft_ms": 50, "tokens_per_s": 20, "replies": [LONG_REPLY]})
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="one"))
            await asyncio.sleep(1.0)
            frames = len(sink.audio(1))
            session.push(Cancel(turn=1))
            assert isinstance(sink.events[-2], ClearBuffer)
            assert isinstance(sink.events[-1], TurnInterrupted)
            assert sink.events[-1].reason == "cancel"
            await asyncio.sleep(2.0)
            assert len(sink.audio(1)) == frames
            assert session.node("llm").streams[0].closed

    run_virtual(main())


def test_generators_that_ignore_cancellation_produce_at_most_the_current_item() -> None:
    pipeline = barge_in_pipeline(
        llm={"ttft_ms": 50, "tokens_per_s": 10, "replies": [LONG_REPLY], "ignore_cancel": True},
        tts={"ttfa_ms": 300, "rtf": 1.0, "ignore_cancel": True},
        relay_ms=30,
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="one"))
            await asyncio.sleep(2.0)
            llm: FakeLlm = session.node("llm")
            tts: FakeTts = session.node("tts")
            stream: FakeLlmStream = llm.streams[0]
            frames = len(sink.audio(1))
            moment = tick()
            session.push(Interrupt())
            await asyncio.sleep(3.0)
            # Each finished the item it was computing (they swallowed the cancellation) ...
            assert stream.ignored_cancels == 1
            assert tts.ignored_cancels == 1
            assert produced_after(stream.produced, moment, 1) == 1
            assert produced_after(tts.produced, moment, 1) == 1
            # ... which was dropped, and nothing more was pulled from them.
            assert len(sink.audio(1)) == frames
            assert stream.closed
            assert session.stats.errors.total() == 0

    run_virtual(main())


def test_the_kernel_fences_an_output_that_ignores_interruptions() -> None:
    pipeline = make_pipeline(
        [
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["input"],
                "config": {"replies": [LONG_REPLY]},
            },
            {"name": "tts", "type": "fake_tts", "inputs": ["llm"], "config": {"rtf": 0.01}},
            {"name": "naive", "type": "naive_output", "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("turn.commit",),
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="go"))
            await asyncio.sleep(2.0)
            frames = len(sink.audio(1))
            assert frames > 0
            session.push(Interrupt())
            naive = session.node("naive")
            emitted_at_interrupt = naive.emitted
            await asyncio.sleep(5.0)
            # The node went on playing its private queue ...
            assert naive.emitted > emitted_at_interrupt
            # ... and none of it reached the client.
            assert len(sink.audio(1)) == frames
            assert session.stats.drops[("naive", "audio.out", "fenced")] == (
                naive.emitted - emitted_at_interrupt
            )

    run_virtual(main())


class BrokenSink(RecordingSink):
    """A transport whose send fails on every control event."""

    def send(self, event: Event) -> None:
        super().send(event)
        if event.kind.startswith(("control.", "turn.")):
            raise ConnectionResetError("client went away")


def test_a_failing_sink_does_not_stop_the_interrupt() -> None:
    pipeline = barge_in_pipeline(llm={"ttft_ms": 50, "tokens_per_s": 20, "replies": [LONG_REPLY]})
    sink = BrokenSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="one"))
            await asyncio.sleep(1.0)
            frames = len(sink.audio(1))
            session.push(Interrupt())  # every send of the interrupt's events raises
            await asyncio.sleep(0)
            assert session.node("output").buffered_ms == 0
            assert session.node("llm").streams[0].closed
            assert session.fence == 1
            await asyncio.sleep(2.0)
            assert len(sink.audio(1)) == frames
            assert session.stats.errors["sink:client"] == 3  # interrupt, clear, interrupted

    run_virtual(main())
