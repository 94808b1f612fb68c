"""Traces of a real session: the demo pipeline (energy VAD, the turn manager with
speculation, the test kit's fake ASR/LLM/TTS) and its scripted caller, in virtual time.

The demo call has every case the traces must tell apart: replies confirmed from a
speculation, a backchannel talked over the bot (not an interruption), a barge-in,
and a speculation on a wrong partial that is discarded and replaced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from rspp.demo import DEMO_SCRIPT, demo_pipeline
from rspp.kernel import Pipeline
from rspp.observability import tracing, watch
from rspp.observability.tracing import TurnTracer
from rspp.testing import RecordingSink, ScriptedCaller, run_virtual

STAGES = ("rspp.llm.ttft", "rspp.llm", "rspp.tts.ttfa", "rspp.tts", "rspp.output")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def _tracer(exporter: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def converse(pipeline: Pipeline, tracer: Tracer | None, *, via_watch: bool = False) -> None:
    """The demo call, traced by a TurnTracer attached directly or by ``watch``."""
    sink = RecordingSink()

    async def main() -> None:
        session = pipeline.session("call-1", sinks={"client": sink})
        if via_watch:
            watch(session, worker="w1")
        else:
            session.observe(TurnTracer(session, tracer, worker="w1"))
        async with session:
            await ScriptedCaller(session, sink, [line.utterance() for line in DEMO_SCRIPT]).play()

    run_virtual(main())


def turns(exporter: InMemorySpanExporter) -> list[tuple[ReadableSpan, dict[str, ReadableSpan]]]:
    """Each turn span (in order) with its children by name (the last VAD segment for vad)."""
    spans = exporter.get_finished_spans()
    roots = sorted((s for s in spans if s.parent is None), key=lambda s: s.start_time or 0)
    out = []
    for root in roots:
        children = {
            s.name: s
            for s in spans
            if s.parent is not None and s.parent.span_id == root.context.span_id
        }
        out.append((root, children))
    return out


def test_each_turn_is_a_span_with_a_child_per_stage(exporter: InMemorySpanExporter) -> None:
    converse(demo_pipeline(), _tracer(exporter))
    traced = turns(exporter)
    # Five lines said, four answered (the backchannel is not a turn); turn 4 was the
    # discarded speculation, so the last reply is turn 5.
    assert [root.attributes["rspp.turn"] for root, _ in traced] == [1, 2, 3, 5]
    ids = set()
    for root, children in traced:
        assert root.name == "rspp.turn"
        assert root.attributes["rspp.session.id"] == "call-1"
        assert root.attributes["rspp.worker"] == "w1"
        assert root.attributes["rspp.incarnation"] == 1
        assert root.attributes["rspp.pipeline"] == "demo"
        assert {"rspp.vad", "rspp.asr", *STAGES} <= set(children)
        ids.add(root.context.trace_id)
        for child in children.values():
            assert child.context.trace_id == root.context.trace_id
            assert root.start_time <= child.start_time <= child.end_time <= root.end_time
        vad, asr = children["rspp.vad"], children["rspp.asr"]
        ttft, llm = children["rspp.llm.ttft"], children["rspp.llm"]
        ttfa, tts, output = children["rspp.tts.ttfa"], children["rspp.tts"], children["rspp.output"]
        assert root.start_time == vad.start_time  # the turn starts with the user's speech
        assert asr.start_time == vad.start_time
        assert ttft.start_time == llm.start_time and ttft.end_time <= llm.end_time
        # TTS needs text, the caller's audio needs synthesized audio.
        assert ttft.end_time == ttfa.start_time == tts.start_time
        assert ttfa.end_time <= tts.end_time
        assert ttfa.end_time <= output.start_time
        assert output.end_time == root.end_time  # the turn ends when its reply does
        first_audio_ms = (output.start_time - vad.end_time) / 1e6
        assert root.attributes["rspp.first_audio_ms"] == pytest.approx(first_audio_ms, abs=1e-3)
    assert len(ids) == 4  # a trace per turn
    outcomes = [root.attributes["rspp.outcome"] for root, _ in traced]
    assert outcomes == ["played", "barge_in", "played", "played"]


def test_speculation_outcomes_are_events_on_the_turn(exporter: InMemorySpanExporter) -> None:
    converse(demo_pipeline(), _tracer(exporter))
    traced = turns(exporter)
    first = [(e.name, e.attributes["rspp.turn"]) for e in traced[0][0].events]
    assert first == [("rspp.speculation.started", 1), ("rspp.speculation.confirmed", 1)]
    # The caller's last line had a wrong partial: its speculation (turn 4) was discarded
    # and replaced by one on the final transcript (turn 5), which was confirmed.
    last = traced[-1][0]
    speculation = [
        (e.name, e.attributes["rspp.turn"]) for e in last.events if "speculation" in e.name
    ]
    assert speculation == [
        ("rspp.speculation.started", 4),
        ("rspp.speculation.discarded", 4),
        ("rspp.speculation.started", 5),
        ("rspp.speculation.confirmed", 5),
    ]
    discarded = next(e for e in last.events if e.name == "rspp.speculation.discarded")
    assert discarded.attributes["rspp.reason"] == "speculation_replaced"
    times = [e.timestamp for e in last.events]
    assert times == sorted(times)
    assert last.attributes["rspp.speculative"] is True


def test_a_barge_in_is_an_event_at_the_end_of_the_turn_it_cut(
    exporter: InMemorySpanExporter,
) -> None:
    converse(demo_pipeline(), _tracer(exporter))
    (cut, children), (after, after_children) = turns(exporter)[1:3]
    names = [e.name for e in cut.events]
    assert names.count("rspp.barge_in") == 1
    barge_in = next(e for e in cut.events if e.name == "rspp.barge_in")
    assert barge_in.timestamp == cut.end_time == children["rspp.output"].end_time
    assert barge_in.attributes["rspp.delivered_ms"] > 0
    # The backchannel ("uh-huh") paused the output and resumed it; the barge-in paused it.
    held = [(e.name, e.attributes["rspp.reason"]) for e in cut.events if "output" in e.name]
    assert held == [
        ("rspp.output.paused", "undecided_interruption"),
        ("rspp.output.resumed", "not_an_interruption"),
        ("rspp.output.paused", "undecided_interruption"),
    ]
    # The turn that cut it in starts with the words that did, not with the backchannel,
    # and while the reply it cut was still going out.
    spans = exporter.get_finished_spans()
    segments = [s for s in spans if s.parent and s.parent.span_id == after.context.span_id]
    assert [s.name for s in segments].count("rspp.vad") == 1
    assert after.start_time == after_children["rspp.vad"].start_time < cut.end_time
    assert "rspp.barge_in" not in [
        e.name for root, _ in turns(exporter) if root is not cut for e in root.events
    ]


def test_without_speculation_the_llm_starts_after_the_final_transcript(
    exporter: InMemorySpanExporter,
) -> None:
    converse(demo_pipeline(turns={"speculate": False}), _tracer(exporter))
    traced = turns(exporter)
    assert len(traced) == 4
    for root, children in traced:
        assert children["rspp.vad"].end_time <= children["rspp.asr"].end_time
        assert children["rspp.asr"].end_time <= children["rspp.llm"].start_time
        assert root.attributes["rspp.speculative"] is False
        assert not [e for e in root.events if "speculation" in e.name]


def test_watch_traces_only_when_tracing_is_on(exporter: InMemorySpanExporter) -> None:
    async def observers() -> int:
        session = demo_pipeline().session("s", sinks={"client": RecordingSink()})
        before = len(session.emission.observers)
        watch(session)
        return len(session.emission.observers) - before

    assert tracing.tracer() is None
    assert run_virtual(observers()) == 0  # off: the per-event path is the same as before
    tracing.use(_tracer(exporter))
    try:
        assert run_virtual(observers()) == 1
        converse(demo_pipeline(), None, via_watch=True)
    finally:
        tracing.use(None)
    assert len(turns(exporter)) == 4


def test_enable_makes_the_process_trace_through_its_exporter(
    exporter: InMemorySpanExporter,
) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"rspp\[otlp\]"):
            tracing.enable("otlp")
    assert tracing.tracer() is None
    provider = tracing.enable("console", role="worker", exporter=exporter)
    try:
        assert provider.resource.attributes["rspp.role"] == "worker"
        assert tracing.tracer() is not None
        converse(demo_pipeline(), None, via_watch=True)
        provider.force_flush()
    finally:
        tracing.use(None)
        provider.shutdown()
    assert len(turns(exporter)) == 4
    assert type(tracing._exporter("console")).__name__ == "ConsoleSpanExporter"
    with pytest.raises(ValueError, match="no trace exporter"):
        tracing._exporter("zipkin")
