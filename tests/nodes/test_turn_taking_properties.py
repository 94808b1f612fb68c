"""Property-based attack on turn-taking with speculation, through the real turn manager.

Hypothesis generates a caller -- utterances of random words (backchannels
included) at random times, partial transcripts that are right early or change
late, finals after a random delay, the odd client interrupt -- and a random
turn policy and model latency profile. The VAD and ASR events are pushed into a
pipeline of turn manager -> fake LLM -> fake TTS -> audio output. Whatever the
interleaving:

1. no audio of a reply reaches the client before that reply was committed, or
   confirmed if it was a speculation (uncommitted speculative audio never
   leaks);
2. a reply that played to the end (``turn.done``) arrived complete and in
   order: its frames' text is exactly the text the LLM generated for it;
3. no audio of a fenced turn reaches the client after the fence;
4. every speculation ends exactly once (hit, miss or discarded); nothing
   errors; nothing outlives the session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rspp.events import (
    AsrFinal,
    AsrPartial,
    AudioOut,
    ClearBuffer,
    Event,
    Interrupt,
    LlmDelta,
    TurnCommit,
    TurnConfirm,
    TurnDone,
    VadSpeechEnd,
    VadSpeechStart,
)
from rspp.testing import run_virtual, tick
from tests.kernel.helpers import make_pipeline

WORDS = ["book", "a", "table", "for", "two", "tonight", "yes", "uh-huh", "yeah", "please", "stop"]
MS = 1_000_000


@dataclass
class Said:
    start_ms: float
    words: list[str]
    late_change: bool
    final_delay_ms: float


utterance = st.builds(
    Said,
    start_ms=st.floats(0, 9000),  # gap before speaking
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
    late_change=st.booleans(),
    final_delay_ms=st.floats(50, 400),
)
policy = st.fixed_dictionaries(
    {
        "speculate": st.booleans(),
        "silence_ms": st.sampled_from([300.0, 500.0, 800.0]),
        "interrupt_min_ms": st.sampled_from([0.0, 200.0, 400.0]),
        "interrupt_min_words": st.sampled_from([0, 1, 2]),
        "match": st.sampled_from(["exact", "normalized", "words"]),
        "max_word_edits": st.integers(0, 1),
    }
)
models = st.fixed_dictionaries(
    {
        "llm": st.fixed_dictionaries(
            {"ttft_ms": st.floats(50, 600), "tokens_per_s": st.floats(10, 80)}
        ),
        "tts": st.fixed_dictionaries(
            {
                "ttfa_ms": st.floats(0, 250),
                "rtf": st.floats(0, 1.0),
                "chunking": st.sampled_from(["sentence", "clause", "full"]),
                "stream_audio": st.booleans(),
            }
        ),
    }
)


class TickSink:
    def __init__(self) -> None:
        self.records: list[tuple[int, Event]] = []

    def send(self, event: Event) -> None:
        self.records.append((tick(), event))


def schedule(saids: list[Said]) -> list[tuple[int, Event]]:
    """The VAD and ASR events of a caller, as (time ns, event), in time order."""
    events: list[tuple[int, Event]] = []
    now = 0.0
    for said in saids:
        start = now + said.start_ms
        end = start + 330 * len(said.words)
        events.append((int(start * MS), VadSpeechStart(origin_ns=int(start * MS) + 1)))
        final = " ".join(said.words)
        believed = [*said.words[:-1], "table"] if said.late_change else said.words
        for i in range(1, len(said.words) + 1):
            text = " ".join(believed[:i])
            events.append((int((start + 330 * i - 1) * MS), AsrPartial(text=text)))
        detected = end + 200  # the VAD's hangover
        events.append((int(detected * MS), VadSpeechEnd(origin_ns=int(end * MS) + 1)))
        events.append((int((detected + said.final_delay_ms) * MS), AsrFinal(text=final)))
        now = end
    return sorted(events, key=lambda pair: pair[0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    saids=st.lists(utterance, min_size=1, max_size=6),
    turn_policy=policy,
    profile=models,
    interrupts=st.lists(st.floats(0, 15_000), max_size=2),
)
def test_turn_taking_never_leaks_and_never_truncates(
    saids: list[Said], turn_policy: dict[str, Any], profile: dict[str, Any], interrupts: list[float]
) -> None:
    pipeline = make_pipeline(
        [
            {"name": "turns", "type": "turn_manager", "inputs": ["input"], "config": turn_policy},
            {"name": "llm", "type": "fake_llm", "inputs": ["turns"], "config": profile["llm"]},
            {"name": "tts", "type": "fake_tts", "inputs": ["llm"], "config": profile["tts"]},
            {"name": "output", "type": "audio_output", "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("vad.speech_start", "vad.speech_end", "asr.partial", "asr.final"),
    )
    sink = TickSink()
    released: dict[int, int] = {}  # turn -> tick of its commit or confirmation
    fences: list[tuple[int, int]] = []
    generated: dict[int, str] = {}

    def observe(ev: Event) -> None:
        if isinstance(ev, (TurnCommit, TurnConfirm)):
            released.setdefault(ev.turn, tick())
        elif isinstance(ev, ClearBuffer):
            fences.append((tick(), ev.turn))
        elif isinstance(ev, LlmDelta):
            generated[ev.turn] = generated.get(ev.turn, "") + ev.text

    plan = schedule(saids)
    plan += [(int(t * MS), Interrupt(reason="client")) for t in interrupts]
    plan.sort(key=lambda pair: pair[0])

    async def main() -> Any:
        before = asyncio.all_tasks()
        session = pipeline.session(sinks={"client": sink}, observers=[observe])
        async with session:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for at_ns, event in plan:
                await asyncio.sleep(max(0.0, t0 + at_ns / 1e9 - loop.time()))
                event.origin_ns = event.origin_ns and int(t0 * 1e9) + event.origin_ns
                session.push(event)
            await asyncio.sleep(60.0)  # every reply that survives plays out
            assert session.stats.errors.total() == 0, session.stats.errors
            assert session.stats.rejected.get("turn_protocol", 0) == 0
        assert asyncio.all_tasks() == before
        return session

    session = run_virtual(main())
    frames = [(t, ev) for t, ev in sink.records if isinstance(ev, AudioOut)]
    # 1. Nothing before release.
    for t, frame in frames:
        assert frame.turn in released and released[frame.turn] < t, (
            f"audio of turn {frame.turn} reached the client before it was committed"
        )
    # 2. Played replies are complete and in order.
    for _, ev in sink.records:
        if isinstance(ev, TurnDone):
            heard = "".join(f.text for _, f in frames if f.turn == ev.turn)
            assert heard == generated[ev.turn]
    # 3. Nothing after a fence (the last fence is the close's).
    for t_fence, watermark in fences[:-1]:
        for t, frame in frames:
            assert not (t > t_fence and frame.turn <= watermark)
    # 4. Every speculation ended once.
    spec = session.speculation
    assert spec.attempts == spec.hits + spec.misses + spec.discarded
    # Coverage bookkeeping (hypothesis --hypothesis-show-statistics).
    kinds = {ev.kind for _, ev in sink.records}
    event(f"replies played: {min(sum(isinstance(e, TurnDone) for _, e in sink.records), 2)}")
    event(
        f"speculation hits/misses/discards: {spec.hits > 0}/{spec.misses > 0}/{spec.discarded > 0}"
    )
    event(f"barge-in paused the bot: {'control.pause' in kinds}")
    event(f"a reply was interrupted: {'turn.interrupted' in kinds}")
