"""The embedded local stack: each model on its own, then the demo call in real time.

    python benchmarks/local_stack.py                # prints tables, then one JSON line
    python benchmarks/local_stack.py --runs 3       # more demo calls per mode (default 2)
    python benchmarks/local_stack.py --parts loop   # only part 3 (about 20 s)

Part 1, components, on the committed demo recordings (``rspp/assets/demo``)
and the demo's kind of replies: the load time of each model (first use in
this process; Gemma's includes assembling its GGUF into the cache when that
has not happened yet), its real-time factor (compute time / audio time) and
its latency per chunk -- a 512-sample window for Silero, a 20 ms frame for
WebRTC VAD and PocketSphinx, an utterance for Whisper, a clause for the TTSs,
time to first token and tokens/s for Gemma.

Part 2, the demo conversation (four questions, a barge-in into the second
reply) in real time through the two embedded pipelines, in the modes of
``benchmarks/latency.py`` that apply:

* ``local.toml`` (the default: Whisper tiny.en, which gives no partial
  transcripts, so no speculation) -- **sequential** (the TTS gets the whole
  reply, ``chunking = "full"``) and **streaming** (Piper starts on the first
  clause; the shipped configuration);
* ``local_streaming.toml`` (PocketSphinx, streaming partials) -- sequential,
  streaming, and **speculative** (the shipped configuration: the reply starts
  on the partial transcript when the user pauses, held back until the end of
  the turn confirms it).

Voice-to-voice (V2V) is the time from the end of the user's speech (by the
recording's clock) to the first bot audio sent to the client. The final JSON
line's ``v2v_ms_*`` are the default pipeline's shipped configuration (local,
streaming); ``peak_rss_mb`` is the process's peak resident memory with every
model loaded.

Part 3, the event loop under load: two sessions at once (``--lag-sessions``)
play the "weather" recording into the default pipeline in real time, as
``tests/local/test_agent.py`` does, while a watcher sleeps 10 ms at a time and
records how late each wake-up is. Inference runs in the model thread pool, so
the loop should stay free for the other session's events: the target is a
worst lag under 250 ms. (The test checks where the model calls run; how long
the loop stalls depends on the machine's load, so it is measured here.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from rspp.agent import LOCAL_SPEC, demo_script, preload, run_demo_call, run_file
from rspp.kernel import PipelineSpec, build, load_spec
from rspp.kernel.latency import TurnLatency
from rspp.providers.local.espeak import EspeakTts
from rspp.providers.local.llama import LlamaModel, few_shot_prompt
from rspp.providers.local.piper import PiperTts, resample_pcm16
from rspp.providers.local.pocketsphinx import SphinxStream
from rspp.providers.local.silero import SileroStream, silero_session
from rspp.providers.local.whisper import WhisperTranscriber
from rspp.report import SessionReport
from stats import percentile  # benchmarks/ is on sys.path when a script runs

RATE = 16000
FRAME = RATE // 50 * 2  # 20 ms of PCM16
#: Replies of the length the demo's model gives (a clause, then a sentence or two).
REPLIES = [
    "Sure, I can help with that.",
    "Paris is the capital of France, and it is famous for the Eiffel Tower.",
    "It will be sunny tomorrow, with a light breeze in the afternoon.",
    "You are welcome. Have a lovely day!",
]
_SEQUENTIAL = {"turns": {"speculate": False}, "tts": {"chunking": "full"}}
#: (pipeline, mode) -> config changes to the packaged spec.
RUNS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("local", "sequential"): _SEQUENTIAL,
    ("local", "streaming"): {},
    ("local_streaming", "sequential"): _SEQUENTIAL,
    ("local_streaming", "streaming"): {"turns": {"speculate": False}},
    ("local_streaming", "speculative"): {},
}
HEADLINE = ("local", "streaming")
PARTS = ("components", "calls", "loop")
#: The event-loop watcher's sleep (part 3).
TICK_S = 0.01


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def p50_p95(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p95": round(percentile(values, 0.95), 2)}


def timed(load: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = load()
    return value, time.perf_counter() - started


# --------------------------------------------------------------------------- part 1


def bench_vads(audio: list[bytes]) -> dict[str, Any]:
    import webrtcvad

    seconds = sum(len(a) for a in audio) / 2 / RATE
    silero_windows: list[float] = []
    silero_total = 0.0
    for pcm in audio:
        stream = SileroStream(RATE)
        for i in range(0, len(pcm), FRAME):
            started = time.perf_counter()
            probs = stream.push(pcm[i : i + FRAME])
            took = time.perf_counter() - started
            silero_total += took
            if probs:
                silero_windows.append(ms(took) / len(probs))
    vad = webrtcvad.Vad(2)
    frames: list[float] = []
    for pcm in audio:
        for i in range(0, len(pcm) - FRAME + 1, FRAME):
            started = time.perf_counter()
            vad.is_speech(pcm[i : i + FRAME], RATE)
            frames.append(time.perf_counter() - started)
    return {
        "silero_vad": {"rtf": silero_total / seconds, "window_ms": p50_p95(silero_windows)},
        "webrtc_vad": {
            "rtf": sum(frames) / seconds,
            "frame_ms": p50_p95([ms(f) for f in frames]),
        },
    }


def bench_asrs(audio: list[bytes], whisper: WhisperTranscriber) -> dict[str, Any]:
    seconds = sum(len(a) for a in audio) / 2 / RATE
    frames: list[float] = []
    finals: list[float] = []
    stream = SphinxStream(RATE)
    try:
        for pcm in audio:
            stream.start()
            for i in range(0, len(pcm), FRAME):
                started = time.perf_counter()
                stream.feed(pcm[i : i + FRAME])
                frames.append(time.perf_counter() - started)
            started = time.perf_counter()
            stream.end()
            finals.append(time.perf_counter() - started)
    finally:
        stream.close()
    utterances: list[float] = []
    for pcm in audio:
        started = time.perf_counter()
        whisper.transcribe(pcm, RATE)
        utterances.append(time.perf_counter() - started)
    return {
        "pocketsphinx_asr": {
            "rtf": (sum(frames) + sum(finals)) / seconds,
            "frame_ms": p50_p95([ms(f) for f in frames]),
            "final_ms": p50_p95([ms(f) for f in finals]),
        },
        "whisper_asr": {
            "rtf": sum(utterances) / seconds,
            "utterance_ms": p50_p95([ms(u) for u in utterances]),
        },
    }


def bench_llm(model: LlamaModel, questions: list[str]) -> dict[str, Any]:
    ttft: list[float] = []
    rates: list[float] = []
    for round_ in range(2):
        for n, question in enumerate(questions):
            times: list[float] = []
            started = time.perf_counter()
            model.generate(
                few_shot_prompt([], question),
                lambda _, times=times: times.append(time.perf_counter()),  # type: ignore[misc]
                threading.Event(),
                max_tokens=48,
                seed=round_ * 100 + n,
            )
            if times:
                ttft.append(times[0] - started)
            if len(times) > 1:
                rates.append((len(times) - 1) / (times[-1] - times[0]))
    return {
        "llama_llm": {
            "ttft_ms": p50_p95([ms(t) for t in ttft]),
            "tokens_per_s_p50": round(statistics.median(rates), 1),
        }
    }


def bench_tts(name: str, synthesize: Callable[[str], bytes]) -> dict[str, Any]:
    pieces = [p for reply in REPLIES for p in _clauses(reply)]
    latencies: list[float] = []
    audio_s = 0.0
    for piece in pieces:
        started = time.perf_counter()
        pcm = synthesize(piece)
        latencies.append(time.perf_counter() - started)
        audio_s += len(pcm) / 2 / RATE
    return {
        name: {"rtf": sum(latencies) / audio_s, "clause_ms": p50_p95([ms(t) for t in latencies])}
    }


def _clauses(text: str) -> list[str]:
    out, current = [], ""
    for word in text.split():
        current = f"{current} {word}".strip()
        if word[-1] in ",.!?":
            out.append(current)
            current = ""
    return out + ([current] if current else [])


def components() -> tuple[dict[str, float], dict[str, Any]]:
    from rspp.providers.local.assets import gemma_gguf

    load: dict[str, float] = {}
    _, load["silero_vad"] = timed(silero_session)
    stream, load["pocketsphinx_asr"] = timed(lambda: SphinxStream(RATE))
    stream.close()
    whisper, load["whisper_asr"] = timed(WhisperTranscriber)
    _, load["gemma_gguf_assembly"] = timed(gemma_gguf)
    llama, load["llama_llm"] = timed(LlamaModel)
    piper, load["piper_tts"] = timed(PiperTts)
    espeak, load["espeak_tts"] = timed(EspeakTts)

    script = demo_script()
    audio = [u.audio for u in script]
    results: dict[str, Any] = {}
    results |= bench_vads(audio)
    results |= bench_asrs(audio, whisper)
    results |= bench_llm(llama, [u.text for u in script])
    results |= bench_tts("piper_tts", lambda text: piper.synthesize(text, sample_rate=RATE))
    results |= bench_tts(
        "espeak_tts",
        lambda text: resample_pcm16(espeak.synthesize(text), espeak.native_rate, RATE),
    )
    return {k: round(v, 3) for k, v in load.items()}, results


# --------------------------------------------------------------------------- part 2


def mode_spec(run: tuple[str, str]) -> PipelineSpec:
    spec = load_spec(LOCAL_SPEC.with_name(f"{run[0]}.toml"))
    changes = RUNS[run]
    nodes = [
        msgspec.structs.replace(n, config={**n.config, **changes.get(n.name, {})})
        for n in spec.nodes
    ]
    return msgspec.structs.replace(spec, nodes=nodes)


def conversation(mode: tuple[str, str], runs: int) -> dict[str, Any]:
    pipeline = build(mode_spec(mode))
    latencies: list[TurnLatency] = []
    hits = attempts = 0
    for _ in range(runs):
        result = asyncio.run(run_demo_call(pipeline))
        if result.stats.errors.total():
            raise RuntimeError(f"{mode}: errors in the demo call: {result.stats.errors}")
        latencies += [t.latency for t in result.turns if t.latency is not None]
        hits += result.speculation.hits
        attempts += result.speculation.attempts
    v2v = [lat.v2v_ms for lat in latencies if lat.v2v_ms is not None]

    def stage(name: str) -> float | None:
        values = [getattr(lat, name) for lat in latencies if getattr(lat, name) is not None]
        return round(statistics.median(values), 1) if values else None

    return {
        "turns": len(v2v),
        "v2v_ms_p50": round(statistics.median(v2v), 1),
        "v2v_ms_p95": round(percentile(v2v, 0.95), 1),
        "stages_ms_p50": {
            s: stage(s) for s in ("vad_ms", "asr_ms", "endpoint_ms", "llm_ttft_ms", "tts_ttfa_ms")
        },
        "speculation": {"attempts": attempts, "hits": hits},
    }


# --------------------------------------------------------------------------- part 3


def loop_lag(sessions: int, runs: int) -> dict[str, Any]:
    """How late the event loop wakes up while ``sessions`` calls run at once, ``runs`` times."""
    pipeline = build(load_spec(LOCAL_SPEC))
    (audio,) = [u.audio for u in demo_script() if u.name == "weather"]
    lags: list[float] = []
    answered = turns = silent = 0

    async def watch() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - before - TICK_S)

    async def calls() -> list[SessionReport]:
        await preload(pipeline)  # loading the models is not what is measured
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(watch())
            running = [
                tg.create_task(run_file(pipeline, audio, tail_s=12.0)) for _ in range(sessions)
            ]
            results = [await c for c in running]
            watcher.cancel()
        return results

    for _ in range(runs):
        for result in asyncio.run(calls()):
            if result.stats.errors.total():
                raise RuntimeError(f"errors in a concurrent call: {result.stats.errors}")
            turns += len(result.turns)
            answered += sum(1 for t in result.turns if t.reply.strip())
            silent += not any(t.reply.strip() for t in result.turns)
    return {
        "sessions": sessions,
        "runs": runs,
        "turns": turns,
        "answered": answered,
        "sessions_unanswered": silent,
        "ticks": len(lags),
        "worst_lag_ms": ms(max(lags)),
        "lag_ms_p99": ms(percentile(lags, 0.99)),
        "lag_ms_p50": ms(statistics.median(lags)),
    }


# --------------------------------------------------------------------------- report


def _row(name: str, r: dict[str, Any]) -> str:
    latency = next(
        (
            f"{k[:-3]} {v['p50']:.1f} / {v['p95']:.1f}"
            for k, v in r.items()
            if isinstance(v, dict) and "p50" in v
        ),
        "",
    )
    rtf = f"{r['rtf']:.3f}" if "rtf" in r else "-"
    return f"  {name:<18} RTF {rtf:>6}   {latency} ms (p50 / p95)"


def main() -> None:
    parser = argparse.ArgumentParser(description="the embedded local stack, part by part")
    parser.add_argument("--runs", type=int, default=2, help="demo calls per mode")
    names = [f"{spec}/{mode}" for spec, mode in RUNS]
    parser.add_argument("--modes", nargs="*", default=names, choices=names)
    parser.add_argument(
        "--parts", nargs="*", default=list(PARTS), choices=PARTS, help="which parts to run"
    )
    parser.add_argument(
        "--lag-sessions", type=int, default=2, help="calls at once in part 3 (the loop's lag)"
    )
    parser.add_argument("--lag-runs", type=int, default=1, help="times part 3 is repeated")
    args = parser.parse_args()

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}")
    load: dict[str, float] = {}
    parts: dict[str, Any] = {}
    if "components" in args.parts:
        print("loading the models...", flush=True)
        load, parts = components()
        print("load time (s): " + ", ".join(f"{k} {v:.2f}" for k, v in load.items()))
    for name, r in parts.items():
        if name == "llama_llm":
            print(
                f"  {name:<18} TTFT {r['ttft_ms']['p50']:.0f} / {r['ttft_ms']['p95']:.0f} ms "
                f"(p50 / p95), {r['tokens_per_s_p50']} tokens/s"
            )
        else:
            print(_row(name, r))

    modes: dict[str, Any] = {}
    for name in args.modes if "calls" in args.parts else ():
        spec, mode = name.split("/")
        print(f"demo call, {name}, {args.runs} run(s) in real time...", flush=True)
        modes[name] = conversation((spec, mode), args.runs)
    if modes:
        print("pipeline/mode                 turns  V2V p50  V2V p95   EOT  LLM TTFT  TTS TTFA")
    for name, r in modes.items():
        st = r["stages_ms_p50"]
        print(
            f"{name:<28} {r['turns']:>6} {r['v2v_ms_p50']:>8.0f} {r['v2v_ms_p95']:>8.0f} "
            f"{st['endpoint_ms'] or 0:>5.0f} {st['llm_ttft_ms'] or 0:>9.0f} "
            f"{st['tts_ttfa_ms'] or 0:>9.0f}"
        )

    lag: dict[str, Any] | None = None
    if "loop" in args.parts and args.lag_sessions > 0:
        print(
            f"event loop, {args.lag_sessions} calls at once, {args.lag_runs} run(s) "
            "in real time...",
            flush=True,
        )
        lag = loop_lag(args.lag_sessions, args.lag_runs)
        print(
            f"  worst lag {lag['worst_lag_ms']:.1f} ms, p99 {lag['lag_ms_p99']:.1f} ms, "
            f"p50 {lag['lag_ms_p50']:.2f} ms ({lag['ticks']} wake-ups of {ms(TICK_S):g} ms; "
            f"{lag['answered']} of {lag['turns']} turns answered, "
            f"{lag['sessions_unanswered']} of {args.lag_sessions * args.lag_runs} calls unanswered)"
        )

    out: dict[str, Any] = {}
    headline = modes.get("/".join(HEADLINE)) or next(iter(modes.values()), None)
    if headline is not None:
        out |= {"v2v_ms_p50": headline["v2v_ms_p50"], "v2v_ms_p95": headline["v2v_ms_p95"]}
    if parts:
        out |= {
            "asr_rtf": round(parts["pocketsphinx_asr"]["rtf"], 4),
            "tts_rtf": round(parts["piper_tts"]["rtf"], 4),
            "llm_ttft_ms_p50": parts["llama_llm"]["ttft_ms"]["p50"],
        }
    if lag is not None:
        out["loop_worst_lag_ms"] = lag["worst_lag_ms"]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if parts:
        out |= {"load_s": load, "components": parts}
    if modes:
        out["modes"] = modes
    if lag is not None:
        out["loop_lag"] = lag
    print(json.dumps(out))


if __name__ == "__main__":
    main()
