"""Speculation in the kernel: held output, confirm, miss, discard, and the conversation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rspp.events import AudioOut, Event, Interrupt, Metrics
from rspp.kernel import Pipeline, Session
from rspp.testing import FakeLlm, RecordingSink, run_virtual

from .helpers import make_pipeline
from .toy_nodes import Direct

REPLY = "First sentence here. And a second one to follow."


def pipeline(output: str = "audio_output", **llm: Any) -> Pipeline:
    return make_pipeline(
        [
            {"name": "director", "type": "director", "inputs": ["input"]},
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["director"],
                "config": {"ttft_ms": 100, "tokens_per_s": 50, **llm},
            },
            {"name": "tts", "type": "fake_tts", "inputs": ["llm"], "config": {"ttfa_ms": 50}},
            {"name": "output", "type": output, "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("test.direct",),
    )


def direct(session: Session, action: str, text: str = "", target: int = 0) -> int:
    """Push an instruction; return the turn number the kernel gave a new root."""
    session.push(Direct(action=action, text=text, target=target))
    roots = session.node("director").roots
    return int(roots[-1].turn)


def test_speculative_output_is_held_until_confirmed_then_released_at_once() -> None:
    sink = RecordingSink()
    metrics: list[Metrics] = []

    def keep(ev: Event) -> None:
        if isinstance(ev, Metrics):
            metrics.append(ev)

    async def main() -> None:
        async with pipeline(replies={"hello": REPLY}).session(
            sinks={"client": sink}, observers=[keep]
        ) as s:
            turn = direct(s, "speculate", "hello")
            assert s.turns.held == turn
            await asyncio.sleep(2.0)  # the whole reply is generated and synthesized
            assert sink.audio() == [], "nothing of a speculation reaches the client"
            assert s.node("output").buffered_ms > 2000
            assert [m.text for m in s.conversation.history()] == []  # still tentative
            confirmed_at = s.now_ns()
            direct(s, "confirm", target=turn)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            first_t, _first = next((t, e) for t, e in sink.records if isinstance(e, AudioOut))
            assert first_t == confirmed_at  # released at once, no generation wait
            await asyncio.sleep(5.0)
            assert "".join(f.text for f in sink.audio(turn)) == REPLY
            assert [m.text for m in s.conversation.history()] == ["hello", REPLY]
        (lat,) = s.turn_latencies
        assert lat.speculative and lat.saved_ms is not None and lat.saved_ms > 0
        assert s.speculation.hits == 1 and s.speculation.attempts == 1
        (summary,) = [m for m in metrics if m.name == "session.speculation"]
        assert summary.values["hits"] == 1 and summary.values["saved_ms_total"] == lat.saved_ms

    run_virtual(main())


def test_a_missed_speculation_never_reaches_the_client_and_the_commit_plays() -> None:
    sink = RecordingSink()

    async def main() -> None:
        replies = {"book at eighty": "Eighty what?", "book at eight": REPLY}
        async with pipeline(replies=replies).session(sinks={"client": sink}) as s:
            spec = direct(s, "speculate", "book at eighty")
            await asyncio.sleep(1.0)  # it has produced tokens and audio
            llm: FakeLlm = s.node("llm")
            assert llm.streams[0].produced
            reply = direct(s, "commit", "book at eight")
            assert reply == spec + 1 and s.fence == spec
            await asyncio.sleep(0)
            assert llm.streams[0].closed
            await asyncio.sleep(6.0)
        assert sink.audio(spec) == []
        assert "".join(f.text for f in sink.audio(reply)) == REPLY
        # The client hears nothing about the speculation at all.
        assert all(ev.turn != spec for ev in sink.events if not ev.kind.startswith("session."))
        stats = s.speculation
        assert (stats.attempts, stats.hits, stats.misses) == (1, 0, 1)
        assert stats.wasted_llm_deltas == len(llm.streams[0].produced)
        assert stats.wasted_tts_s > 0 and stats.wasted_llm_s == pytest.approx(1.0, abs=0.01)
        assert [m.text for m in s.conversation.history()] == ["book at eight", REPLY]

    run_virtual(main())


def test_a_discarded_speculation_leaves_no_trace() -> None:
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline(replies={"i would like": REPLY}).session(sinks={"client": sink}) as s:
            spec = direct(s, "speculate", "i would like")
            await asyncio.sleep(0.05)  # before its first token
            direct(s, "cancel", target=spec)
            assert s.turns.held == 0 and s.fence == spec
            await asyncio.sleep(3.0)
            assert s.node("output").buffered_ms == 0
        assert sink.audio() == []
        assert s.speculation.discarded == 1 and s.speculation.wasted_llm_deltas == 0
        assert s.conversation.history() == []
        assert s.turn_latencies == []  # a dropped speculation is not a turn

    run_virtual(main())


def test_speculating_while_a_reply_plays_is_refused() -> None:
    async def main() -> None:
        async with pipeline(replies=[REPLY]).session(sinks={"client": RecordingSink()}) as s:
            reply = direct(s, "commit", "one")
            await asyncio.sleep(0.5)
            s.push(Direct(action="speculate", text="two"))
            assert s.stats.rejected["turn_protocol"] == 1
            assert s.turns.active == reply and s.fence == 0  # the reply is untouched

    run_virtual(main())


def test_the_kernel_gate_holds_a_naive_outputs_speculative_audio() -> None:
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline("naive_output", replies=[REPLY]).session(sinks={"client": sink}) as s:
            spec = direct(s, "speculate", "x")
            await asyncio.sleep(5.0)  # the naive output "plays" everything it gets
            assert sink.audio() == []  # ... but the gate held it
            direct(s, "confirm", target=spec)
            frames = sink.audio(spec)
            assert frames and "".join(f.text for f in frames) == REPLY  # released in order

    run_virtual(main())


def test_after_a_barge_in_the_model_sees_only_what_was_heard() -> None:
    long_reply = " ".join(f"Sentence number {i} of the answer." for i in range(12))
    sink = RecordingSink()

    async def main() -> None:
        replies = [long_reply, "Sure."]
        async with pipeline(replies=replies).session(sinks={"client": sink}) as s:
            first = direct(s, "commit", "tell me a story")
            await asyncio.sleep(3.0)
            s.push(Interrupt())
            heard = "".join(f.text for f in sink.audio(first))
            assert 0 < len(heard) < len(long_reply)
            second = direct(s, "commit", "stop")
            await asyncio.sleep(0.01)
            llm: FakeLlm = s.node("llm")
            turn, prompt = llm.prompts[-1]
            assert turn == second
            assert prompt == [
                ("user", "tell me a story"),
                ("assistant", heard.strip()),
                ("user", "stop"),
            ]
            (message,) = [m for m in s.conversation.history() if m.role == "assistant"]
            assert message.interrupted

    run_virtual(main())
