"""Cancellation-first consistency on every emission path, and what a sink may rely on.

Each test is one way a node can emit -- a timer, a run() body, a control handler, a
thread handing results back -- or one way a sink can react (pushing an interrupt
from inside ``send``), played against the invariant: once the kernel has accepted
an interruption of a reply, nothing of it reaches a sink.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rspp.events import (
    AudioOut,
    ClearBuffer,
    Error,
    Event,
    Interrupt,
    LlmDelta,
    TurnCommit,
)
from rspp.kernel import Session
from rspp.testing import RecordingSink, run_virtual, tick

from .helpers import make_pipeline
from .toy_nodes import Direct, RunEmitter, ThreadLlm

REPLY = " ".join(f"Sentence {i} goes on for a while." for i in range(10))


def voice_pipeline(*, between: dict[str, Any] | None = None, output: str = "audio_output") -> Any:
    """commit -> fake LLM -> [a node in between] -> fake TTS -> output -> sink "client"."""
    nodes: list[dict[str, Any]] = [
        {
            "name": "llm",
            "type": "fake_llm",
            "inputs": ["input"],
            "config": {"replies": [REPLY], "ttft_ms": 50, "tokens_per_s": 40},
        }
    ]
    upstream = "llm"
    if between is not None:
        nodes.append({"name": "between", "inputs": ["llm"], **between})
        upstream = "between"
    nodes += [
        {
            "name": "tts",
            "type": "fake_tts",
            "inputs": [upstream],
            "config": {"ttfa_ms": 20, "rtf": 0.05, "chunk_ms": 100},
        },
        {"name": "output", "type": output, "inputs": ["tts"], "sink": "client"},
    ]
    return make_pipeline(nodes, inputs=("turn.commit",))


class TickSink(RecordingSink):
    """Also notes, with a global tick, when each event arrived (to order it against fences)."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[tuple[int, Event]] = []

    def send(self, event: Event) -> None:
        self.ticks.append((tick(), event))
        super().send(event)

    def after_clear(self, turn: int) -> list[Event]:
        """Audio of ``turn`` that arrived after the first clear_buffer covering it."""
        fenced_at = next(
            t for t, ev in self.ticks if isinstance(ev, ClearBuffer) and ev.turn >= turn
        )
        return [ev for t, ev in self.ticks if t > fenced_at and isinstance(ev, AudioOut)]


def test_a_text_debouncing_node_cannot_keep_audio_playing_after_an_interrupt() -> None:
    # The node between the LLM and the TTS re-emits the reply's text from a 30 ms timer.
    # Its timer callbacks emit with no cause; before, they took the current epoch, which
    # no interrupt fences, and 200 frames of the interrupted reply kept playing.
    pipeline = voice_pipeline(between={"type": "debounce", "config": {"delay_ms": 30}})
    sink = TickSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="talk"))
            await sink.wait_for(lambda: len(sink.audio(1)) >= 10)
            session.push(Interrupt(reason="client"))
            await asyncio.sleep(5.0)
            assert session.stats.replies == {"barge_in": 1}

    run_virtual(main())
    assert sink.after_clear(1) == []
    assert [ev.reason for ev in sink.of_kind("turn.interrupted")] == ["barge_in"]  # type: ignore[attr-defined]


def test_reply_output_from_a_run_body_with_no_cause_is_dropped_and_reported_once() -> None:
    pipeline = make_pipeline(
        [
            {"name": "llm", "type": "fake_llm", "inputs": ["input"]},
            {"name": "noise", "type": "run_emitter", "inputs": ["input"]},
            {"name": "output", "type": "audio_output", "inputs": ["noise"], "sink": "client"},
        ],
        inputs=("turn.commit",),
    )
    sink = RecordingSink()
    errors: list[Error] = []

    async def main() -> None:
        observer = [lambda ev: errors.append(ev) if isinstance(ev, Error) else None]
        async with pipeline.session(sinks={"client": sink}, observers=observer) as session:
            session.push(TurnCommit(text="a reply is in progress"))
            await asyncio.sleep(1.0)
            noise: RunEmitter = session.node("noise")
            assert noise.emitted >= 40
            assert session.stats.drops[("noise", "tts.audio", "no_reply")] == noise.emitted

    run_virtual(main())
    assert sink.audio() == []
    (error,) = errors  # reported once, not once per event
    assert (error.source, error.code) == ("noise", "NoReply")
    assert "cause" in error.message


def test_output_emitted_from_a_clear_handler_belongs_to_the_cleared_turn() -> None:
    pipeline = make_pipeline(
        [
            {"name": "llm", "type": "fake_llm", "inputs": ["input"]},
            {"name": "tts", "type": "fake_tts", "inputs": ["llm"]},
            {"name": "echo", "type": "clear_echo", "inputs": ["input"]},
            {"name": "output", "type": "audio_output", "inputs": ["tts", "echo"], "sink": "client"},
        ],
        inputs=("turn.commit",),
    )
    sink = TickSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="one"))
            await sink.wait_for(lambda: bool(sink.audio(1)))
            session.push(Interrupt())
            await asyncio.sleep(1.0)
            assert session.stats.drops[("echo", "tts.audio", "fenced")] >= 1

    run_virtual(main())
    assert sink.after_clear(1) == []


@pytest.mark.parametrize(
    ("mode", "queued", "delivered"),
    [("raw", True, False), ("to_thread", True, True), ("to_thread", False, False)],
)
def test_results_handed_back_from_a_thread(mode: str, queued: bool, delivered: bool) -> None:
    # A thread that inherited a queued handler's context (asyncio.to_thread) hands back
    # output of the reply it works for. A bare thread's results have no cause, and neither
    # have those of a thread an inline handler started (it runs in its emitter's context):
    # dropped and reported, never guessed into whatever reply is current.
    pipeline = make_pipeline(
        [
            {
                "name": "llm",
                "type": "thread_llm",
                "inputs": ["input"],
                "queued": queued,
                "config": {"mode": mode},
            },
            {"name": "sink", "type": "collect", "inputs": ["llm"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> tuple[list[str], int, int]:
        async with pipeline.session() as session:
            session.push(TurnCommit(text="q"))
            llm: ThreadLlm = session.node("llm")
            for _ in range(200):
                if llm.handed_back == 3:
                    break
                await asyncio.sleep(0.01)
            texts = [ev.text for ev in session.node("sink").seen if isinstance(ev, LlmDelta)]
            dropped = session.stats.drops[("llm", "llm.delta", "no_reply")]
            return texts, llm.handed_back, dropped

    texts, handed_back, dropped = asyncio.run(main())
    assert handed_back == 3
    if delivered:
        assert (texts, dropped) == (["one ", "two ", "three "], 0)
    else:
        assert (texts, dropped) == ([], 3)


def test_released_speculation_stops_at_once_when_a_sink_interrupts_from_send() -> None:
    # A naive output "plays" a held speculation: the kernel's gate holds its frames.
    # On confirm they are released; the client (this sink) barges in on the first one,
    # from inside send(). Before, the rest of the released frames still arrived.
    pipeline = make_pipeline(
        [
            {"name": "director", "type": "director", "inputs": ["input"]},
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["director"],
                "config": {"replies": [REPLY], "ttft_ms": 10, "tokens_per_s": 200},
            },
            {
                "name": "tts",
                "type": "fake_tts",
                "inputs": ["llm"],
                "config": {"ttfa_ms": 0, "rtf": 0.0, "chunk_ms": 20},
            },
            {"name": "output", "type": "naive_output", "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("test.direct",),
    )

    class BargingSink(TickSink):
        session: Session | None = None
        depth = 0
        nested = 0

        def send(self, event: Event) -> None:
            self.depth += 1
            self.nested = max(self.nested, self.depth)
            super().send(event)
            if isinstance(event, AudioOut) and self.session is not None:
                self.session.push(Interrupt(reason="client"))
                self.session = None
            self.depth -= 1

    sink = BargingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(Direct(action="speculate", text="x"))
            spec = session.turns.held
            await asyncio.sleep(2.0)  # the naive output has "played" dozens of frames
            assert sink.audio() == [] and session.outbound.held >= 13
            sink.session = session
            session.push(Direct(action="confirm", target=spec))
            assert len(sink.audio(spec)) == 1  # the first released frame, then the interrupt
            await asyncio.sleep(3.0)

    run_virtual(main())
    assert sink.after_clear(1) == []
    assert sink.nested == 1  # the sink never got an event while inside send()
    first = next(i for i, ev in enumerate(sink.events) if isinstance(ev, AudioOut))
    kinds = [ev.kind for ev in sink.events[first : first + 4]]
    assert kinds == ["audio.out", "control.interrupt", "control.clear_buffer", "turn.interrupted"]
    assert len(sink.audio()) == 1


def test_a_sink_receives_events_in_output_position_order_across_a_release() -> None:
    pipeline = make_pipeline(
        [
            {"name": "director", "type": "director", "inputs": ["input"]},
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["director"],
                "config": {"replies": ["Held. Back."], "ttft_ms": 10, "tokens_per_s": 100},
            },
            {"name": "tts", "type": "fake_tts", "inputs": ["llm"], "config": {"ttfa_ms": 0}},
            {"name": "output", "type": "naive_output", "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("test.direct", "turn.commit"),
    )
    sink = RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"client": sink}, incarnation=7) as session:
            session.push(Direct(action="speculate", text="x"))
            spec = session.turns.held
            await asyncio.sleep(2.0)
            session.push(Interrupt())  # ignored (nothing audible), but the client is told
            session.push(Direct(action="confirm", target=spec))
            await asyncio.sleep(2.0)

    run_virtual(main())
    events = sink.events
    positions = [ev.pos for ev in events]
    assert positions == list(range(1, len(events) + 1))  # strictly increasing, no gaps
    assert {ev.inc for ev in events} == {7}
    # The held frames were emitted before the interrupt but delivered after it: seq order
    # is emission order, which is not what a sink can rely on; pos order is.
    seqs = [ev.seq for ev in events]
    assert seqs != sorted(seqs)
    first_frame = next(i for i, ev in enumerate(events) if isinstance(ev, AudioOut))
    assert events[first_frame - 1].kind == "control.interrupt"


def test_an_event_sent_to_two_sinks_is_one_event_with_one_position() -> None:
    pipeline = make_pipeline(
        [{"name": "llm", "type": "fake_llm", "inputs": ["input"], "sink": "a"}],
        inputs=("turn.commit",),
    )
    a, b = RecordingSink(), RecordingSink()

    async def main() -> None:
        async with pipeline.session(sinks={"a": a, "b": b}) as session:
            session.push(TurnCommit(text="q"))
            await asyncio.sleep(1.0)  # the reply's text is flowing to "a"
            session.push(Interrupt())

    run_virtual(main())
    for sink in (a, b):
        positions = [ev.pos for ev in sink.events]
        assert positions == sorted(set(positions))
    shared = {ev.pos for ev in b.events}  # b only gets control events, each also sent to a
    assert shared <= {ev.pos for ev in a.events}
    assert len(a.events) > len(b.events)


@pytest.mark.parametrize("early_s", [0.0, 1e-10])
def test_a_deadline_at_the_instant_of_an_input_comes_first_whatever_the_loop_does(
    early_s: float,
) -> None:
    # A frame is due at T and a barge-in arrives at T. The event loop may run the two
    # in either order (its order of equal deadlines depends on its history; here the
    # push is even scheduled a tenth of a nanosecond before the frame's timer, the same
    # session nanosecond): the session plays the frame first either way, so a session
    # restored from a snapshot and fed the same input decides to the frame like this one.
    pipeline = voice_pipeline()
    sink = TickSink()
    due: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with pipeline.session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="talk"))
            await sink.wait_for(lambda: len(sink.audio(1)) >= 10)
            output = session.node("output")
            at = output._timer.when_ns  # the next frame's deadline
            due.append(at)
            when = session.clock.loop_time(at) - early_s
            assert round(when * 1e9) + session.clock.offset_ns == at
            loop.call_at(when, lambda: session.push(Interrupt(reason="client")))
            await asyncio.sleep(2.0)

    run_virtual(main())
    frames = [t for t, ev in sink.records if isinstance(ev, AudioOut)]
    assert frames[-1] == due[0]  # the frame due at the barge-in's instant was played
    clear = next(t for t, ev in sink.ticks if isinstance(ev, ClearBuffer))
    assert all(t < clear for t, ev in sink.ticks if isinstance(ev, AudioOut))
