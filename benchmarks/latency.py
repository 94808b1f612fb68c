"""Latency benchmark: the same conversation in three modes, voice-to-voice per turn.

    python benchmarks/latency.py              # prints tables, then one JSON line
    python benchmarks/latency.py --out out/latency   # also writes timelines (HTML/SVG)

A scripted caller has a 22-turn conversation with the demo pipeline
(``rspp/pipelines/demo.toml``: energy VAD, the turn manager, fake ASR/LLM/TTS,
audio output) in virtual time, so the result is deterministic. The turns mix
short and long utterances and replies, partial transcripts that are right
early and ones the recogniser corrects at the end, and one barge-in. The fake
models' latency profiles are drawn per request from ranges typical of
deployed models (the same request costs the same in every mode):

* VAD: energy VAD, 200 ms hangover; end of turn after 500 ms of silence
* ASR final: 150-300 ms after the VAD's end of speech
* LLM: time to first token 300-600 ms, then 30-60 tokens/s
* TTS: time to first audio 100-250 ms per piece of text, real-time factor 0.1-0.3,
  60 ms of speech per character

Modes:

* **sequential** -- each stage waits for the previous to finish: the LLM starts
  at the end of the turn, the TTS gets the whole reply (``chunking = "full"``)
  and hands its audio over when all of it is synthesized;
* **streaming** -- the TTS starts on the first sentence while the LLM still
  writes, and audio streams out as it is synthesized;
* **speculative** -- streaming, plus the turn manager starts the reply on the
  transcript when the user pauses, held back until the end of the turn
  confirms it (or dropped when the final transcript differs).

Voice-to-voice (V2V) is the time from the end of the user's speech to the
first bot audio sent to the client. Kernel overhead is the time the critical
path's events spent inside the runtime (queues and dispatch), measured as real
CPU time; its share is total kernel time over total V2V.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rspp.demo import DemoLine, demo_pipeline
from rspp.kernel.latency import SpeculationStats, TurnLatency
from rspp.observability import Timeline, render_html, render_svg
from rspp.testing import RecordingSink, ScriptedCaller, VirtualClock
from stats import percentile  # benchmarks/ is on sys.path when a script runs

SHORT = "Sure, I can do that."
REPLIES = {
    "long": (
        "Here is what I found. The museum opens at nine and closes at six, except on "
        "Mondays. Tickets are fifteen euros, and students pay half. The best time to go "
        "is early in the morning, before the tour groups arrive."
    ),
    "medium": "Good question. It takes about twenty minutes by train from the centre.",
    "short": SHORT,
}

#: (what the caller says, reply size, what partials show before the end if they change late,
#:  barge in after ms); "..." marks where the caller hesitates (and the VAD hears a pause).
CONVERSATION: list[tuple[str, str, str | None, float | None]] = [
    ("Hi there.", "short", None, None),
    ("I would like to plan a day in Paris.", "medium", None, None),
    ("What time does the Louvre open?", "long", None, None),
    ("Okay.", "short", None, None),
    ("How do I get there from the airport?", "medium", "How do I get there from the hotel", None),
    ("Is there a faster way?", "medium", None, None),
    ("Tell me about the museum tickets and the opening hours on weekends.", "long", None, None),
    ("Wait, stop, I mean on Sunday.", "medium", None, 1500.0),
    ("Yes.", "short", None, None),
    (
        "Can you book a table for two at eight?",
        "medium",
        "Can you book a table for two at eighty",
        None,
    ),
    ("Somewhere near the river would be nice.", "medium", None, None),
    ("I would like to ... sit outside if the weather is good.", "medium", None, None),
    ("Thanks.", "short", None, None),
    ("What is the weather going to be like?", "long", None, None),
    ("Should I take an umbrella?", "short", "Should I take an umbrella with", None),
    ("And what about the evening?", "medium", None, None),
    ("Great, and how late is the metro open on Saturday nights?", "long", None, None),
    ("No.", "short", None, None),
    ("Please remind me tomorrow at seven.", "short", "Please remind me tomorrow at eleven", None),
    ("How much is a taxi back to the airport?", "medium", None, None),
    ("That is expensive.", "short", None, None),
    ("Is there a cheaper option?", "medium", "Is there a cheaper opinion", None),
    ("Perfect, thank you, goodbye.", "short", None, None),
]

MODES: dict[str, dict[str, dict[str, Any]]] = {
    "sequential": {
        "turns": {"speculate": False},
        "tts": {"chunking": "full", "stream_audio": False},
    },
    "streaming": {"turns": {"speculate": False}},
    "speculative": {"turns": {"speculate": True}},
}


def script() -> list[DemoLine]:
    lines = []
    for said, size, partial, barge in CONVERSATION:
        words = said.split()
        pause = words.index("...") if "..." in words else None
        lines.append(
            DemoLine(
                " ".join(w for w in words if w != "..."),
                REPLIES[size],
                barge_in_after_ms=barge,
                partial=partial,
                hesitate_after_words=pause,
            )
        )
    return lines


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


async def run_mode(mode: str) -> tuple[list[TurnLatency], SpeculationStats, Timeline]:
    lines = script()
    pipeline = demo_pipeline(lines, **MODES[mode])
    sink = RecordingSink()
    timeline = Timeline()
    async with pipeline.session(
        f"latency-{mode}", sinks={"client": sink}, observers=[timeline]
    ) as s:
        caller = ScriptedCaller(s, sink, [line.utterance() for line in lines])
        await caller.play()
        assert s.stats.errors.total() == 0, s.stats.errors
    return s.turn_latencies, s.speculation, timeline


def summarize(latencies: list[TurnLatency], spec: SpeculationStats) -> dict[str, Any]:
    v2v = [lat.v2v_ms for lat in latencies if lat.v2v_ms is not None]
    kernel_ms = sum((lat.kernel_us or 0.0) for lat in latencies) / 1000
    return {
        "turns": len(latencies),
        "v2v_ms_p50": statistics.median(v2v),
        "v2v_ms_p95": percentile(v2v, 0.95),
        "stages_ms_p50": {
            stage: median(getattr(lat, stage) for lat in latencies)
            for stage in ("vad_ms", "asr_ms", "endpoint_ms", "llm_ttft_ms", "tts_ttfa_ms")
        },
        "kernel_us_p50": median(lat.kernel_us for lat in latencies),
        "kernel_overhead_share": kernel_ms / sum(v2v),
        "interrupted": sum(lat.interrupted for lat in latencies),
        "speculation": {
            "attempts": spec.attempts,
            "hits": spec.hits,
            "misses": spec.misses,
            "discarded": spec.discarded,
            "hit_rate": spec.hit_rate,
            "wasted_llm_tokens": spec.wasted_llm_deltas,
            "wasted_tts_s": round(spec.wasted_tts_s, 2),
            "wasted_llm_s": round(spec.wasted_llm_s, 2),
            "saved_ms_p50": median(spec.saved_ms),
        },
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:7.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description="voice-to-voice latency in three modes")
    parser.add_argument("--out", help="folder for the timeline of each mode (HTML)")
    parser.add_argument("--figures", help="folder for one turn drawn in each mode (SVG)")
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    timelines: dict[str, Timeline] = {}
    for mode in MODES:
        latencies, spec, timeline = VirtualClock().run(run_mode(mode))
        results[mode] = summarize(latencies, spec)
        timelines[mode] = timeline

    print(f"{len(CONVERSATION)} user turns, virtual time; medians in ms\n")
    header = "mode          V2V p50  V2V p95    VAD    ASR    EOT  LLM TTFT  TTS TTFA  kernel"
    print(header)
    for mode, r in results.items():
        st = r["stages_ms_p50"]
        print(
            f"{mode:<12} {_fmt(r['v2v_ms_p50'])}  {_fmt(r['v2v_ms_p95'])} "
            f"{_fmt(st['vad_ms'])}{_fmt(st['asr_ms'])}{_fmt(st['endpoint_ms'])}"
            f"   {_fmt(st['llm_ttft_ms'])}   {_fmt(st['tts_ttfa_ms'])}  "
            f"{r['kernel_us_p50']:5.0f} µs ({r['kernel_overhead_share']:.4%} of V2V)"
        )
    spec = results["speculative"]["speculation"]
    print(
        f"\nspeculation: {spec['attempts']} attempts, {spec['hits']} hits, {spec['misses']} "
        f"misses, {spec['discarded']} discarded (hit rate {spec['hit_rate']:.0%}); wasted "
        f"{spec['wasted_llm_tokens']} LLM tokens ({spec['wasted_llm_s']} s of LLM requests) "
        f"and {spec['wasted_tts_s']} s of TTS audio; "
        f"first audio ready {spec['saved_ms_p50']:.0f} ms earlier (median of hits)"
    )
    seq, spe = results["sequential"]["v2v_ms_p50"], results["speculative"]["v2v_ms_p50"]
    print(f"speculative V2V p50 is {spe / seq:.0%} of sequential")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for mode, timeline in timelines.items():
            (out / f"timeline-{mode}.html").write_text(
                render_html(timeline.exchanges(), f"Latency benchmark: {mode} mode"),
                encoding="utf-8",
            )
        print(f"timelines written to {out}/")
    if args.figures:
        figures = Path(args.figures)
        figures.mkdir(parents=True, exist_ok=True)
        turn = 2  # "What time does the Louvre open?": a long reply
        for mode, timeline in timelines.items():
            exchange = timeline.exchanges()[turn]
            (figures / f"latency-turn-{mode}.svg").write_text(
                render_svg(exchange, f"{mode}: “{exchange.user_text}”"), encoding="utf-8"
            )
        # Speculation at work: a miss (the final corrected a word) and a discard (a hesitation).
        spec_timeline = timelines["speculative"].exchanges()
        for name, outcome in (
            ("miss", "speculation_replaced"),
            ("discard", "speculation_discarded"),
        ):
            exchange = next(
                ex for ex in spec_timeline if any(a.outcome == outcome for a in ex.attempts)
            )
            (figures / f"latency-speculation-{name}.svg").write_text(
                render_svg(exchange, f"speculation {name}: “{exchange.user_text}”"),
                encoding="utf-8",
            )
        print(f"figures written to {figures}/")

    print(
        json.dumps(
            {
                "turns": len(CONVERSATION),
                "sequential_v2v_ms_p50": round(results["sequential"]["v2v_ms_p50"], 1),
                "sequential_v2v_ms_p95": round(results["sequential"]["v2v_ms_p95"], 1),
                "streaming_v2v_ms_p50": round(results["streaming"]["v2v_ms_p50"], 1),
                "streaming_v2v_ms_p95": round(results["streaming"]["v2v_ms_p95"], 1),
                "speculative_v2v_ms_p50": round(spe, 1),
                "speculative_v2v_ms_p95": round(results["speculative"]["v2v_ms_p95"], 1),
                "speculative_vs_sequential": round(spe / seq, 3),
                "speculative_hit_rate": round(spec["hit_rate"], 3),
                "speculation_attempts": spec["attempts"],
                "speculation_wasted_llm_tokens": spec["wasted_llm_tokens"],
                "speculation_wasted_tts_s": spec["wasted_tts_s"],
                "speculation_wasted_llm_s": spec["wasted_llm_s"],
                "speculation_saved_ms_p50": spec["saved_ms_p50"],
                "kernel_overhead_share": round(
                    max(r["kernel_overhead_share"] for r in results.values()), 6
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
