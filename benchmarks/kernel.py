"""Kernel benchmark: RSPP side by side with Pipecat, in one run.

    python benchmarks/kernel.py            # full run (creates .venv-pipecat on first use)
    python benchmarks/kernel.py --quick    # smoke run
    python benchmarks/kernel.py --no-pipecat

(a) Per-hop overhead. ``ingress -> 10 pass-through nodes -> arrival node``; each
event is a small registered kind (``bench.tick``) pushed with ``session.push``,
stamped with ``perf_counter_ns()`` just before the push; the arrival node reads
``perf_counter_ns()`` first thing. ``hop_us = (arrival - inject) / 10``
(11 hand-offs, divided by 10, exactly as on the Pipecat side).
* paced: 2000 events, one per 1 ms, first 50 discarded; median and p99
  (nearest rank).
* throughput: 20000 events pushed back to back (when the queued chain's first
  inbox is full, ``push`` refuses and the pusher awaits ``session.writable``, as
  a transport does); events/s = N / (last arrival - first push).
Pass-through nodes are inline (the default for a synchronous node). The same
chain with every node ``queued = true`` (an inbox and a task per node, like
Pipecat's processors) is measured too and reported as ``rspp_queued_*``.

(b) Interruption. ``ingress -> fake LLM (a token every 20 ms) -> burst TTS
(10 s of audio at once on the first token) -> audio output (20 ms frames in
real time) -> recording sink``. Per trial: commit a turn; when playout has
started and the LLM is mid-stream (plus a random 0-20 ms), take ``t0`` and push
``control.interrupt``. ``t_silent`` is when the sink (the client) received
``control.clear_buffer`` -- by then the output buffer was dropped -- and
``t_closed`` is when the LLM's provider stream was closed. ``interrupt_ms =
(max(t_silent, t_closed) - t0)``; stale frames are audio frames of the
interrupted turn that reached the sink after ``t0``. 100 trials in one session.

(c) Pipecat: ``benchmarks/pipecat_side.py`` measures the equivalent pipelines
with Pipecat's own mechanisms (see its docstring), in its own virtual
environment (``.venv-pipecat``, pipecat-ai from PyPI).

The last line of output is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from rspp.events import Event, Interrupt, LlmDelta, TtsAudio, TtsDone, TurnCommit, register
from rspp.kernel import Node, NodeConfig, PipelineSpec, build

try:  # the kernel before issue 8 had no backpressure on push (run side by side with it)
    from rspp.kernel import Overloaded
except ImportError:  # pragma: no cover
    Overloaded = RuntimeError  # type: ignore[misc,assignment]
from rspp.kernel.registry import default_registry
from rspp.testing import FakeLlm, tone
from stats import percentile  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
PIPECAT_VENV = ROOT / ".venv-pipecat"
PIPECAT_VERSION = "1.14.0"


@register
class Tick(Event, tag="bench.tick", kw_only=True):
    """The benchmark's event: a registered application kind (input, not reply output)."""

    fenced: ClassVar[bool] = False
    n: int = 0


registry = default_registry.copy()


@registry.register("bench.arrive")
class Arrive(Node[NodeConfig]):
    """Records the arrival time of every event."""

    consumes: ClassVar[tuple[str, ...]] = ("bench.tick",)

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.arrivals: list[int] = []

    def on_event(self, event: Event) -> None:
        self.arrivals.append(time.perf_counter_ns())


@registry.register("bench.burst_tts")
class BurstTts(Node[NodeConfig]):
    """A TTS that synthesizes 10 s of audio the moment the first token arrives."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    produces: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")
    FRAME = tone(20.0)

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._started: set[int] = set()

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        if isinstance(event, LlmDelta) and event.turn not in self._started:
            self._started.add(event.turn)
            for _ in range(500):
                yield TtsAudio(pcm=self.FRAME)
        elif not isinstance(event, LlmDelta):
            yield TtsDone()


class PerfSink:
    """The client: records (perf_counter_ns, event)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, Event]] = []

    def send(self, event: Event) -> None:
        self.records.append((time.perf_counter_ns(), event))


def _spec(nodes: list[dict[str, Any]], inputs: list[str]) -> PipelineSpec:
    return msgspec.convert({"name": "bench", "input": inputs, "nodes": nodes}, PipelineSpec)


def chain_spec(queued: bool) -> PipelineSpec:
    nodes: list[dict[str, Any]] = []
    upstream = "input"
    for i in range(10):
        nodes.append(
            {"name": f"p{i}", "type": "passthrough", "inputs": [upstream], "queued": queued}
        )
        upstream = f"p{i}"
    nodes.append({"name": "arrive", "type": "bench.arrive", "inputs": [upstream]})
    return _spec(nodes, ["bench.tick"])


async def hop_overhead(queued: bool, paced: int, throughput: int) -> dict[str, float]:
    pipeline = build(chain_spec(queued), registry)
    async with pipeline.session("bench") as session:
        arrive: Arrive = session.node("arrive")
        loop = asyncio.get_running_loop()
        # Paced stream.
        gc.collect()
        injected: list[int] = []
        start = loop.time()
        for i in range(paced):
            delay = start + i * 0.001 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            injected.append(time.perf_counter_ns())
            session.push(Tick(n=i))
        while len(arrive.arrivals) < paced:  # noqa: ASYNC110 - polling is the measurement
            await asyncio.sleep(0.001)
        hops = [(a - t) / 10 / 1000 for t, a in zip(injected, arrive.arrivals, strict=True)][50:]
        arrive.arrivals.clear()
        # Throughput.
        gc.collect()
        t_first = time.perf_counter_ns()
        for i in range(throughput):
            try:
                session.push(Tick(n=i))
            except Overloaded:  # the first inbox is full: wait for room, as a transport does
                await session.writable("bench.tick")
                session.push(Tick(n=i))
            if queued and i % 256 == 255:
                await asyncio.sleep(0)  # let the workers drain (inboxes are bounded)
        while len(arrive.arrivals) < throughput:  # noqa: ASYNC110
            await asyncio.sleep(0)
        elapsed = (arrive.arrivals[-1] - t_first) / 1e9
        dropped = session.stats.dropped()
    return {
        "hop_us_p50": statistics.median(hops),
        "hop_us_p99": percentile(hops, 0.99),
        "events_per_s": throughput / elapsed,
        "dropped": dropped,
    }


def barge_spec() -> PipelineSpec:
    return _spec(
        [
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["input"],
                "config": {
                    "ttft_ms": 20.0,
                    "tokens_per_s": 50.0,
                    "replies": [" ".join(["token"] * 1000)],
                },
            },
            {"name": "tts", "type": "bench.burst_tts", "inputs": ["llm"]},
            {"name": "output", "type": "audio_output", "inputs": ["tts"], "sink": "client"},
        ],
        ["turn.commit"],
    )


async def interruption(trials: int, seed: int = 7) -> dict[str, float]:
    rng = random.Random(seed)
    pipeline = build(barge_spec(), registry)
    sink = PerfSink()
    latencies: list[float] = []
    closes: list[float] = []
    silences: list[float] = []
    stale = 0
    async with pipeline.session("bench", sinks={"client": sink}) as session:
        llm: FakeLlm = session.node("llm")
        output = session.node("output")
        for trial in range(trials):
            turn = session.turns.epoch
            session.push(TurnCommit(text=f"trial {trial}"))
            stream = None
            while True:  # playout started and the LLM mid-stream
                await asyncio.sleep(0.005)
                frames = sum(
                    1 for _, ev in sink.records if ev.kind == "audio.out" and ev.turn == turn
                )
                if llm.streams and llm.streams[-1].turn == turn:
                    stream = llm.streams[-1]
                if stream is not None and frames >= 3 and len(stream.produced) >= 3:
                    break
            await asyncio.sleep(rng.uniform(0, 0.02))
            assert output.buffered_ms > 9000, "10 s must be buffered at the output"
            seen = len(sink.records)
            t0 = time.perf_counter_ns()
            session.push(Interrupt())
            while not stream.closed:  # noqa: ASYNC110
                await asyncio.sleep(0)
            t_silent = next(t for t, ev in sink.records[seen:] if ev.kind == "control.clear_buffer")
            assert output.buffered_ms == 0
            latencies.append((max(t_silent, stream.closed_perf_ns) - t0) / 1e6)
            closes.append((stream.closed_perf_ns - t0) / 1e6)
            silences.append((t_silent - t0) / 1e6)
            await asyncio.sleep(0.1)  # anything stale would have played by now
            stale += sum(
                1 for t, ev in sink.records if ev.kind == "audio.out" and ev.turn == turn and t > t0
            )
    return {
        "interrupt_ms_p50": statistics.median(latencies),
        "interrupt_ms_p99": percentile(latencies, 0.99),
        "llm_closed_ms_p50": statistics.median(closes),
        "silent_ms_p50": statistics.median(silences),
        "silent_ms_p99": percentile(silences, 0.99),
        "stale_frames": stale,
        "trials": trials,
    }


def run_pipecat(quick: bool) -> dict[str, Any] | None:
    python = PIPECAT_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PIPECAT_VENV.name} with pipecat-ai=={PIPECAT_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PIPECAT_VENV)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"pipecat-ai=={PIPECAT_VERSION}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            print(install.stdout, install.stderr, sep="\n", file=sys.stderr)
            return None
    cmd = [str(python), str(ROOT / "benchmarks" / "pipecat_side.py")]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
        return None
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


async def rspp_side(quick: bool) -> dict[str, Any]:
    paced, throughput, trials = (300, 3000, 5) if quick else (2000, 20000, 100)
    inline = await hop_overhead(False, paced, throughput)
    queued = await hop_overhead(True, paced, throughput)
    barge = await interruption(trials)
    return {"inline": inline, "queued": queued, "barge": barge}


def main() -> None:
    parser = argparse.ArgumentParser(description="RSPP kernel benchmark, side by side with Pipecat")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--no-pipecat", action="store_true", help="skip the Pipecat side")
    args = parser.parse_args()

    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}",
        flush=True,
    )
    rspp = asyncio.run(rspp_side(args.quick))
    inline, queued, barge = rspp["inline"], rspp["queued"], rspp["barge"]
    print(
        f"RSPP inline hop:  p50 {inline['hop_us_p50']:.2f} us  p99 {inline['hop_us_p99']:.2f} us"
        f"  {inline['events_per_s']:,.0f} events/s"
    )
    print(
        f"RSPP queued hop:  p50 {queued['hop_us_p50']:.2f} us  p99 {queued['hop_us_p99']:.2f} us"
        f"  {queued['events_per_s']:,.0f} events/s"
    )
    print(
        f"RSPP interrupt:   p50 {barge['interrupt_ms_p50']:.3f} ms  "
        f"p99 {barge['interrupt_ms_p99']:.3f} ms  stale frames {barge['stale_frames']}"
    )
    result: dict[str, Any] = {
        "rspp_hop_us_p50": round(inline["hop_us_p50"], 3),
        "rspp_hop_us_p99": round(inline["hop_us_p99"], 3),
        "rspp_events_per_s": round(inline["events_per_s"]),
        "rspp_queued_hop_us_p50": round(queued["hop_us_p50"], 3),
        "rspp_queued_hop_us_p99": round(queued["hop_us_p99"], 3),
        "rspp_queued_events_per_s": round(queued["events_per_s"]),
        "rspp_interrupt_ms_p50": round(barge["interrupt_ms_p50"], 4),
        "rspp_interrupt_ms_p99": round(barge["interrupt_ms_p99"], 4),
        "rspp_llm_closed_ms_p50": round(barge["llm_closed_ms_p50"], 4),
        "rspp_silent_ms_p50": round(barge["silent_ms_p50"], 4),
        "rspp_silent_ms_p99": round(barge["silent_ms_p99"], 4),
        "rspp_stale_frames": barge["stale_frames"],
        "rspp_dropped": inline["dropped"] + queued["dropped"],
    }
    pipecat = None if args.no_pipecat else run_pipecat(args.quick)
    if pipecat is not None:
        result.update(
            {
                "pipecat_version": pipecat["pipecat_version"],
                "pipecat_hop_us_p50": round(pipecat["hop_us_p50"], 3),
                "pipecat_hop_us_p99": round(pipecat["hop_us_p99"], 3),
                "pipecat_events_per_s": round(pipecat["events_per_s"]),
                "pipecat_interrupt_ms_p50": round(pipecat["interrupt_ms_p50"], 4),
                "pipecat_interrupt_ms_p99": round(pipecat["interrupt_ms_p99"], 4),
                "pipecat_stale_frames": pipecat["stale_frames"],
                "hop_p50_ratio": round(pipecat["hop_us_p50"] / inline["hop_us_p50"], 1),
                "queued_hop_p50_ratio": round(pipecat["hop_us_p50"] / queued["hop_us_p50"], 1),
                "throughput_ratio": round(inline["events_per_s"] / pipecat["events_per_s"], 1),
                "interrupt_p50_ratio": round(
                    pipecat["interrupt_ms_p50"] / barge["interrupt_ms_p50"], 1
                ),
            }
        )
        print(
            f"Pipecat hop:      p50 {pipecat['hop_us_p50']:.2f} us  "
            f"p99 {pipecat['hop_us_p99']:.2f} us  {pipecat['events_per_s']:,.0f} events/s"
        )
        print(
            f"Pipecat interrupt: p50 {pipecat['interrupt_ms_p50']:.3f} ms  "
            f"p99 {pipecat['interrupt_ms_p99']:.3f} ms  stale frames {pipecat['stale_frames']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
