"""Property-based attack on cancellation-first consistency.

Hypothesis generates a pipeline (LLM -> [slow relay] -> TTS -> output, and a
VAD on the user's audio) with random latency profiles -- slow and fast stages,
generators that swallow cancellation, output lead -- and a random schedule of
commits, client interrupts, cancels and user speech (which makes the VAD emit
interrupts from inside the pipeline) at random times. Whatever the
interleaving:

1. after the kernel accepts an interruption (or cancel) of turn n, no audio of
   a turn <= n reaches the client;
2. no generating node produces more than the one item it was producing for a
   fenced turn, and every LLM stream of a fenced turn is closed;
3. a reply that was never fenced arrives complete and in order;
4. sequence numbers reach the client strictly increasing; nothing errors;
   nothing outlives the session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rspp.events import (
    AudioIn,
    AudioOut,
    Cancel,
    ClearBuffer,
    Event,
    Interrupt,
    TurnCommit,
    TurnDone,
)
from rspp.testing import FakeLlm, FakeTts, run_virtual, silence, speech_like, tick

from .helpers import barge_in_pipeline

REPLIES = [
    "Short one.",
    "A medium reply with two sentences. Here is the second one!",
    " ".join(f"Sentence {i} goes on for a while." for i in range(8)),
]


@dataclass
class TickSink:
    """Records what reaches the client with a global tick, to order it against kernel decisions."""

    records: list[tuple[int, Event]]

    def send(self, event: Event) -> None:
        self.records.append((tick(), event))


profiles = st.fixed_dictionaries(
    {
        "llm": st.fixed_dictionaries(
            {
                "ttft_ms": st.floats(0, 600),
                "tokens_per_s": st.floats(5, 200),
                "ignore_cancel": st.booleans(),
                "replies": st.permutations(REPLIES),
            }
        ),
        "tts": st.fixed_dictionaries(
            {
                "ttfa_ms": st.floats(0, 300),
                "rtf": st.floats(0.0, 1.2),
                "chunk_ms": st.floats(20, 400),
                "ignore_cancel": st.booleans(),
            }
        ),
        "output": st.fixed_dictionaries(
            {"lead_ms": st.floats(0, 200), "frame_ms": st.sampled_from([10.0, 20.0])}
        ),
        "relay_ms": st.one_of(st.none(), st.floats(0, 100)),
    }
)
actions = st.lists(
    st.tuples(
        st.sampled_from(["commit", "interrupt", "cancel", "speech"]),
        st.floats(0, 3.0),  # pause after the action
        st.floats(0.02, 0.6),  # how long the user speaks (speech only)
    ),
    min_size=1,
    max_size=10,
)
FRAME_S = 0.02
SPEECH = speech_like(FRAME_S * 1000, seed=1)
QUIET = silence(FRAME_S * 1000)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=profiles, schedule=actions)
def test_cancellation_first_consistency(
    profile: dict, schedule: list[tuple[str, float, float]]
) -> None:
    pipeline = barge_in_pipeline(
        llm=profile["llm"],
        tts=profile["tts"],
        output=profile["output"],
        relay_ms=profile["relay_ms"],
        vad=True,
    )
    sink = TickSink([])
    fences: list[tuple[int, int]] = []  # (tick when accepted, fence watermark)

    vad_accepted = [0]
    last_interrupt: list[Event] = []

    def observe(ev: Event) -> None:
        if isinstance(ev, Interrupt):
            last_interrupt[:] = [ev]
        elif isinstance(ev, ClearBuffer):
            fences.append((tick(), ev.turn))
            # Coverage bookkeeping: was this fence caused by the VAD (the user talking)?
            if last_interrupt and last_interrupt[0].seq == ev.seq - 1:
                vad_accepted[0] += last_interrupt[0].reason == "barge_in"  # type: ignore[attr-defined]

    async def main() -> tuple[FakeLlm, FakeTts, int]:
        before = asyncio.all_tasks()
        session = pipeline.session(sinks={"client": sink}, observers=[observe])
        async with session:
            for action, wait, speech_s in schedule:
                if action == "commit":
                    session.push(TurnCommit(text="question"))
                elif action == "interrupt":
                    session.push(Interrupt(reason="client"))
                elif action == "cancel":
                    session.push(Cancel(turn=session.turns.epoch - 1))
                else:  # the user talks (over the bot, or not), then pauses
                    for pcm in [SPEECH] * round(speech_s / FRAME_S) + [QUIET] * 16:
                        session.push(AudioIn(pcm=pcm))
                        await asyncio.sleep(FRAME_S)
                await asyncio.sleep(wait)
            await asyncio.sleep(30.0)  # let every surviving reply finish playing
            final_fence = session.fence
            assert final_fence == session.turns.epoch - 1  # every reply is over, so fenced
            llm, tts = session.node("llm"), session.node("tts")
            assert session.stats.errors.total() == 0
        assert all(t.done() for t in session.tasks)
        assert asyncio.all_tasks() == before
        return llm, tts, final_fence

    llm, tts, final_fence = run_virtual(main())
    # The close fences everything; only the fences accepted while the call was live
    # are interesting for the invariants below (the last ClearBuffer is the close's).
    live_fences = fences[:-1]
    event(f"fences while live: {min(len(live_fences), 3)}")
    event(f"VAD interrupts accepted: {min(vad_accepted[0], 2)}")

    # 1. No audio of a fenced turn after the fence was accepted.
    for t_sent, ev in sink.records:
        if isinstance(ev, AudioOut):
            for t_fence, watermark in live_fences:
                assert not (t_sent > t_fence and ev.turn <= watermark), (
                    f"audio of turn {ev.turn} reached the client after turn {watermark} was fenced"
                )

    # 2. At most the in-flight item per generating node after each fence; streams closed.
    for t_fence, watermark in live_fences:
        for stream in llm.streams:
            if stream.turn <= watermark:
                late = [t for t, _ in stream.produced if t > t_fence]
                assert len(late) <= 1
                assert stream.closed
        late_chunks = [t for t, turn in tts.produced if t > t_fence and turn <= watermark]
        assert len(late_chunks) <= 1

    # 3. Unfenced replies are complete and in order.
    fenced_turns = {
        s.turn for s in llm.streams if s.turn <= (max((w for _, w in live_fences), default=0))
    }
    done_turns = {ev.turn for _, ev in sink.records if isinstance(ev, TurnDone)}
    for stream in llm.streams:
        if stream.turn in fenced_turns:
            continue
        assert stream.turn in done_turns, f"turn {stream.turn} never finished playing"
        heard = "".join(
            ev.text for _, ev in sink.records if isinstance(ev, AudioOut) and ev.turn == stream.turn
        )
        assert heard == "".join(stream.tokens)

    # 4. Client-side ordering.
    seqs = [ev.seq for _, ev in sink.records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert final_fence >= max((w for _, w in live_fences), default=0)
