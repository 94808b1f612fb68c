"""Property-based attack on cancellation-first consistency, on every path at once.

Hypothesis builds a pipeline -- a fake LLM that may swallow cancellation (or be
made to fail mid-reply), optionally a slow relay or a text-debouncing node that
re-emits from timers between it and the TTS, a fake TTS, a pacing output or a
naive one (then the kernel's own gate holds a speculation's audio), perhaps a
node emitting reply audio from a ``run()`` body with no cause, and a VAD on the
user's audio -- and a schedule of *episodes*. In each, a reply starts (committed,
or speculated and later confirmed or discarded), plays for a while, and is ended
on purpose in most examples: by a client interrupt, a cancel, a client clear, the
user talking (the VAD interrupts from inside the pipeline), a sink that pushes an
interrupt from inside ``send()``, or the LLM failing; and sometimes the session
*moves* in the middle of an episode: snapshot, then restore on a virtual clock
with another origin. Whatever the interleaving:

1. once a reply is over -- fenced by an interruption, or played out -- no audio of
   it reaches the client (across moves too);
2. a generating node produces at most the one item it was producing after its
   reply was fenced, and every LLM stream of a fenced reply is closed;
3. a reply that played out arrives complete and in order (across moves too);
4. no audio of a speculation reaches the client before its confirmation;
5. the client gets events in strictly increasing ``(inc, pos)``, never while it is
   inside ``send()``; nothing errors but what was provoked; no task outlives its
   session.

``pytest --hypothesis-show-statistics`` shows how often each path was taken.
Measured when this was written (300 examples, share of all test cases): an
interruption of audio the client was hearing accepted 65 %, a move mid-reply to
another clock 34 %, a ``run()`` body emitting cause-less audio 37 %, the VAD's
interrupt from inside the pipeline accepted 33 %, timers re-emitting the text
29 %, a sink interrupting from inside ``send()`` 21 %, the kernel's gate
releasing a speculation 18 %, a client clear 15 %, a node failure 12 %.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rspp.events import (
    AudioIn,
    AudioOut,
    Cancel,
    ClearBuffer,
    Error,
    Event,
    Interrupt,
    TurnConfirm,
    TurnDone,
    TurnInterrupted,
)
from rspp.kernel import Pipeline, SessionSnapshot
from rspp.testing import FakeTts, VirtualClock, silence, speech_like, tick
from rspp.testing.fakes import FakeLlmStream

from .helpers import make_pipeline
from .toy_nodes import Direct

REPLIES = [
    "Short one.",
    "A medium reply with two sentences. Here is the second one!",
    " ".join(f"Sentence {i} goes on for a while." for i in range(8)),
]
FRAME_S = 0.02
SPEECH = speech_like(FRAME_S * 1000, seed=1)
QUIET = silence(FRAME_S * 1000)
ALLOWED_ERRORS = {"RuntimeError", "NoReply", "TurnProtocolError"}

pipelines = st.fixed_dictionaries(
    {
        "llm": st.fixed_dictionaries(
            {
                "ttft_ms": st.floats(0, 500),
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
        "output": st.sampled_from(["audio_output", "naive_output"]),
        "lead_ms": st.floats(0, 200),
        "between": st.sampled_from([None, "relay", "debounce"]),
        "noise": st.booleans(),
    }
)


@dataclass(frozen=True)
class Episode:
    start: str  # commit | speculate_confirm | speculate_discard
    hold_s: float  # speculations: how long the reply is held before the decision
    play_s: float  # how long it plays before it is ended
    end: str  # interrupt | cancel | clear | speech | sink | fail | none
    sink_frame: int  # "sink": the sink interrupts on this audio frame of the reply
    speech_s: float
    move_at: float | None  # move the session this far (0-1) into the play time
    after_s: float


# Weighted so that most episodes end in an interruption of audio the client is hearing.
ENDS = ["interrupt"] * 2 + ["speech"] * 3 + ["sink"] * 2 + ["clear", "cancel", "fail", "none"]
episodes = st.builds(
    Episode,
    start=st.sampled_from(
        ["commit", "commit", "speculate_confirm", "speculate_confirm", "speculate_discard"]
    ),
    hold_s=st.floats(0.0, 1.5),
    play_s=st.floats(0.3, 2.5),
    end=st.sampled_from(ENDS),
    sink_frame=st.integers(1, 8),
    speech_s=st.floats(0.06, 0.6),
    move_at=st.none() | st.none() | st.floats(0.0, 1.0),
    after_s=st.floats(0.0, 1.5),
)


def build(p: dict[str, Any]) -> Pipeline:
    nodes: list[dict[str, Any]] = [
        {"name": "director", "type": "director", "inputs": ["input"]},
        {"name": "vad", "type": "energy_vad", "inputs": ["input"]},
        {"name": "llm", "type": "failing_llm", "inputs": ["director"], "config": p["llm"]},
    ]
    upstream = "llm"
    if p["between"] == "relay":
        nodes.append({"name": "between", "type": "slow_relay", "inputs": ["llm"]})
        upstream = "between"
    elif p["between"] == "debounce":
        nodes.append({"name": "between", "type": "debounce", "inputs": ["llm"]})
        upstream = "between"
    nodes.append({"name": "tts", "type": "fake_tts", "inputs": [upstream], "config": p["tts"]})
    feeds = ["tts"]
    if p["noise"]:
        nodes.append({"name": "noise", "type": "run_emitter", "inputs": ["input"]})
        feeds.append("noise")
    output: dict[str, Any] = {"name": "output", "type": p["output"], "inputs": feeds}
    if p["output"] == "audio_output":
        output["config"] = {"lead_ms": p["lead_ms"]}
    nodes.append({**output, "sink": "client"})
    return make_pipeline(nodes, inputs=("test.direct", "audio.in"))


@dataclass
class Client:
    """The sink: records with a global tick; may push an interrupt from inside send()."""

    records: list[tuple[int, Event]] = field(default_factory=list)
    session: Any = None
    barge_on: tuple[int, int] | None = None  # (turn, frame number) to interrupt on
    depth: int = 0
    nested: int = 0
    barged: int = 0

    def send(self, event: Event) -> None:
        self.depth += 1
        self.nested = max(self.nested, self.depth)
        self.records.append((tick(), event))
        if isinstance(event, AudioOut) and self.barge_on is not None:
            turn, frame = self.barge_on
            frames = sum(1 for _, e in self.records if isinstance(e, AudioOut) and e.turn == turn)
            if event.turn == turn and frames >= frame:
                self.barge_on = None
                self.barged += 1
                self.session.push(Interrupt(reason="client"))
        self.depth -= 1


@dataclass
class Trace:
    """What the kernel decided, with ticks, across every incarnation of the session."""

    ends: list[tuple[int, int, str]] = field(default_factory=list)  # tick, turn, how
    confirms: dict[int, int] = field(default_factory=dict)  # turn -> tick
    errors: list[Error] = field(default_factory=list)
    streams: list[FakeLlmStream] = field(default_factory=list)
    tts_logs: list[list[tuple[int, int]]] = field(default_factory=list)
    failures: int = 0
    moved_mid_reply: int = 0
    vad_interrupts: int = 0
    last_interrupt: str = ""
    session: Any = None

    def __call__(self, ev: Event) -> None:
        if not self.session.running:
            return  # a close (a move, or the end) fences everything: not a decision
        if isinstance(ev, Interrupt):
            self.last_interrupt = ev.reason
        elif isinstance(ev, ClearBuffer):
            self.ends.append((tick(), ev.turn, "fenced"))
        elif isinstance(ev, TurnDone):
            self.ends.append((tick(), ev.turn, "played"))
        elif isinstance(ev, TurnConfirm):
            self.confirms[ev.turn] = tick()
        elif isinstance(ev, TurnInterrupted) and ev.reason == "barge_in":
            self.vad_interrupts += self.last_interrupt == "barge_in"
        elif isinstance(ev, Error):
            self.errors.append(ev)


async def segment(
    pipeline: Pipeline,
    client: Client,
    trace: Trace,
    plan: list[Episode],
    snap: SessionSnapshot | None,
    resume_from: tuple[int, float] | None,
) -> tuple[SessionSnapshot | None, tuple[int, float] | None]:
    """Run episodes until one asks to move; return the snapshot and where to resume."""
    before = asyncio.all_tasks()
    session = pipeline.session(
        "call",
        sinks={"client": client},
        observers=[trace],
        snapshot=snap,
        resume_at_ns=snap.clock_ns if snap is not None else None,
    )
    client.session = trace.session = session
    result: tuple[SessionSnapshot | None, tuple[int, float] | None] = (None, None)
    async with session:
        index, done_s = resume_from if resume_from is not None else (0, 0.0)
        while index < len(plan):
            ep = plan[index]
            if done_s == 0.0:
                await start_reply(session, ep)
            if ep.move_at is not None and done_s == 0.0:
                await asyncio.sleep(ep.play_s * ep.move_at)
                if session.turns.active:
                    trace.moved_mid_reply += 1
                result = (session.snapshot(), (index, ep.play_s * ep.move_at or 1e-9))
                break
            await asyncio.sleep(max(0.0, ep.play_s - done_s))
            await end_reply(session, client, ep)
            await asyncio.sleep(ep.after_s)
            index, done_s = index + 1, 0.0
        else:
            await asyncio.sleep(15.0)  # let every surviving reply finish playing
        trace.streams += session.node("llm").streams
        tts: FakeTts = session.node("tts")
        trace.tts_logs.append(tts.produced)
        trace.failures += session.node("llm").failures
        assert session.stats.errors.keys() <= {"llm"}, session.stats.errors
    assert all(t.done() for t in session.tasks)
    assert asyncio.all_tasks() == before
    return result


async def start_reply(session: Any, ep: Episode) -> None:
    if ep.start == "commit":
        session.push(Direct(action="commit", text="question"))
        return
    session.push(Direct(action="speculate", text="question"))
    held = session.turns.held
    await asyncio.sleep(ep.hold_s)
    if ep.start == "speculate_confirm":
        session.push(Direct(action="confirm", target=held))
    else:
        session.push(Direct(action="cancel", target=held))


async def end_reply(session: Any, client: Client, ep: Episode) -> None:
    end = ep.end
    if end == "interrupt":
        session.push(Interrupt(reason="client"))
    elif end == "cancel":
        session.push(Cancel())
    elif end == "clear":
        session.push(ClearBuffer())
    elif end == "fail":
        session.node("llm").fail_next = True
    elif end == "sink" and session.turns.active:
        client.barge_on = (session.turns.active, ep.sink_frame)
    elif end == "speech":
        for pcm in [SPEECH] * max(1, round(ep.speech_s / FRAME_S)) + [QUIET] * 16:
            session.push(AudioIn(pcm=pcm))
            await asyncio.sleep(FRAME_S)


@pytest.mark.timeout(600)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=pipelines, plan=st.lists(episodes, min_size=1, max_size=5), origin=st.floats(10, 1e5))
def test_cancellation_first_consistency_on_every_path(
    p: dict[str, Any], plan: list[Episode], origin: float
) -> None:
    pipeline = build(p)
    client, trace = Client(), Trace()
    snap: SessionSnapshot | None = None
    resume: tuple[int, float] | None = None
    start = 1000.0
    while True:
        snap, resume = VirtualClock(start=start).run(
            segment(pipeline, client, trace, plan, snap, resume)
        )
        if snap is None:
            break
        snap = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=SessionSnapshot)
        start = origin + start  # the next process's clock starts elsewhere

    records = client.records
    audio = [(t, ev) for t, ev in records if isinstance(ev, AudioOut)]
    ends = trace.ends

    # 1. Nothing of a reply after it is over.
    for t_end, turn, how in ends:
        late = [ev for t, ev in audio if t > t_end and ev.turn <= turn]
        assert not late, f"{len(late)} frames of turn {late[0].turn} after it was {how}"

    # 2. At most the in-flight item per generating node after each fence; streams closed.
    fences = [(t, turn) for t, turn, how in ends if how == "fenced"]
    for t_fence, watermark in fences:
        for stream in trace.streams:
            if stream.turn <= watermark:
                assert len([t for t, _ in stream.produced if t > t_fence]) <= 1
                assert stream.closed
        for log in trace.tts_logs:
            assert len([t for t, turn in log if t > t_fence and turn <= watermark]) <= 1

    # 3. A reply that played out is complete and in order (across a move too).
    fenced = {turn for _, turn, how in ends if how == "fenced"}
    played = {turn for _, turn, how in ends if how == "played"} - fenced
    texts = {s.turn: "".join(s.tokens) for s in trace.streams}
    for turn in played:
        heard = "".join(ev.text for _, ev in audio if ev.turn == turn)
        if turn in texts:
            assert heard == texts[turn], f"turn {turn} was not heard whole"

    # 4. No audio of a speculation before its confirmation.
    for t, ev in audio:
        confirmed = trace.confirms.get(ev.turn)
        if confirmed is not None:
            assert t > confirmed

    # 5. Order, no re-entrant delivery, no unexpected errors.
    order = [(ev.inc, ev.pos) for _, ev in records]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert client.nested == 1
    unexpected = [e for e in trace.errors if e.code not in ALLOWED_ERRORS]
    assert not unexpected, unexpected

    _statistics(p, plan, trace, client, ends, audio)


def _statistics(
    p: dict[str, Any],
    plan: list[Episode],
    trace: Trace,
    client: Client,
    ends: list[tuple[int, int, str]],
    audio: list[tuple[int, AudioOut]],
) -> None:
    audible_fence = any(
        how == "fenced" and any(t < t_end and ev.turn == turn for t, ev in audio)
        for t_end, turn, how in ends
    )
    event(f"an interruption of audible audio accepted: {audible_fence}")
    event(f"the VAD's interrupt (from inside the pipeline) accepted: {trace.vad_interrupts > 0}")
    gated = (
        p["output"] == "naive_output"
        and any(e.start == "speculate_confirm" for e in plan)
        and any(ev.turn in trace.confirms for _, ev in audio)
    )
    event(f"the kernel's gate released a speculation: {gated}")
    event(f"a sink interrupted from inside send(): {client.barged > 0}")
    event(f"a node failure ended a reply: {trace.failures > 0}")
    event(f"a client clear ended a reply: {any(e.end == 'clear' for e in plan)}")
    event(f"timers re-emitted the reply's text (debounce): {p['between'] == 'debounce'}")
    event(f"a run() body emitted cause-less audio: {p['noise']}")
    event(f"moved mid-reply to a clock with another origin: {trace.moved_mid_reply > 0}")
