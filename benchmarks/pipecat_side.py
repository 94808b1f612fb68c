"""Pipecat half of the RSPP-vs-Pipecat kernel benchmark.

This script must not import ``rspp``: it runs inside a separate virtual environment that only
has ``pipecat-ai`` (and its dependencies) installed.  Everything below uses Pipecat's public
1.x mechanisms; nothing in Pipecat is monkey-patched.  Pipecat's loguru output is cut to
WARNING and above before Pipecat is imported, so logging does not distort the timings.

How the pipelines are run
-------------------------
Every pipeline is a ``Pipeline`` run by a ``PipelineWorker`` on a ``WorkerRunner``.  (In Pipecat
1.3+ ``PipelineTask``/``PipelineRunner`` are deprecated aliases of exactly these two classes.)
The worker is configured the way a lean deployment would be: ``enable_rtvi=False`` (otherwise an
``RTVIProcessor`` is prepended and an ``RTVIObserver`` watches every frame),
``enable_turn_tracking=False`` (otherwise a ``TurnTrackingObserver`` is attached),
``idle_timeout_secs=None`` (no ``IdleFrameObserver``/idle-monitor task), and ``PipelineParams``
keeps metrics, usage metrics, heartbeats and tracing off (their defaults).  The worker therefore
has no observers at all.  Each processor is an ordinary queued ``FrameProcessor`` (Pipecat's
default: an input task for system frames plus a process task for data/control frames).  The
worker is started, awaited until ``on_pipeline_started`` fires, and finally stopped with
``PipelineWorker.cancel()`` (a ``CancelFrame``), after which ``WorkerRunner.run()`` returns.
``gc.collect()`` is called before each measured phase.

(a) Per-hop overhead
--------------------
Pipeline: ``BenchSource -> 10 x PassThrough -> ArrivalSink``.  Every processor's
``process_frame`` calls ``super().process_frame()`` and then ``push_frame(frame, direction)``.
The event is ``BenchFrame``, a small ``DataFrame`` subclass carrying ``inject_ns``, the
``time.perf_counter_ns()`` taken immediately before injection.  Injection is
``await source.push_frame(frame)`` called from the benchmark driver task: this is how a Pipecat
input transport (or any producer processor) emits frames from its own task, so the event enters
``PassThrough #1``'s queue at once.  ``ArrivalSink.process_frame`` takes ``perf_counter_ns()`` as
its first statement.  Between injection and arrival there are 11 processor-to-processor
hand-offs (source->P1, ..., P10->sink), each through the receiver's input queue and its process
queue (``BenchFrame`` is not a system frame); as specified, the total is divided by 10.

* Paced: ``paced_events`` events (2000; 300 with ``--quick``), event *i* injected at
  ``start + i * 1 ms`` (``asyncio.sleep`` until the target; if the loop wakes late, the next
  event is injected without sleeping, so the schedule does not drift).
  ``hop_us = (arrival_ns - inject_ns) / 10 / 1000``.  The first 50 events are warm-up and
  discarded.  Median is ``statistics.median``; p99 is the nearest-rank percentile (the value at
  1-based rank ``ceil(0.99 * n)`` of the sorted samples).
* Throughput: ``throughput_events`` events (20000; 3000 with ``--quick``), each created and then
  pushed with ``await source.push_frame(frame)`` back-to-back.  Pipecat requires no yielding: the
  processors' queues are unbounded, so ``push_frame`` never suspends and the whole batch is
  enqueued before the pipeline processes the first event.
  ``events_per_s = N / (last arrival at the sink - perf_counter_ns() before the first push)``.
* Also printed (human-readable only, not in the JSON): the same paced run injected through
  ``PipelineWorker.queue_frame()``, i.e. through the worker's push queue and the wrapping
  pipelines' direct-mode source processors, which adds a hop (12 queued processors in total).

(b) Interruption
----------------
Pipeline: ``BargeInSource -> FakeStreamingLLM -> RecordingOutputTransport``.  One pipeline serves
all trials (a conversation with repeated barge-ins); trial *k* is turn *k*.

* ``RecordingOutputTransport`` is a ``BaseOutputTransport`` subclass with
  ``audio_out_enabled=True``, 16 kHz mono, ``audio_out_10ms_chunks=2`` (20 ms = 640-byte chunks).
  Pipecat's ``MediaSender`` buffers audio in its audio queue and its audio task calls
  ``write_audio_frame()`` once per chunk.  ``write_audio_frame`` is the "client": it records
  ``(perf_counter_ns(), turn)`` for the chunk, then blocks for the chunk's duration to emulate
  a playback device, with the same drift-free ``_next_send_time`` clock as Pipecat's websocket
  output transports (those send at twice real time; here it is real time, like a sound card).
  The turn is encoded in the PCM itself (every sample is ``1000 + turn``) because the media
  sender re-chunks audio into new frame objects.  The transport ignores text: ``TextFrame`` s
  simply travel through its audio queue and are pushed on, as Pipecat does with any data frame.
* ``FakeStreamingLLM`` follows the pattern of Pipecat's LLM services: the response is streamed
  inline in ``process_frame`` (i.e. on the processor's process task) while handling the trigger
  frame (``StartResponseFrame``, the analogue of ``LLMContextFrame``), iterating the provider
  under ``contextlib.aclosing`` like ``BaseOpenAILLMService._process_context``.  The provider is an
  async generator yielding a token every 20 ms (up to 1000) and recording ``perf_counter_ns()``
  in its ``finally:``.  Nothing in the fake LLM reacts to interruptions itself: when the
  ``InterruptionFrame`` arrives, ``FrameProcessor.process_frame`` -> ``_start_interruption()``
  cancels and recreates the process task, and that cancellation is what closes the stream.
* Interruption trigger: ``BargeInSource`` receives a ``BargeInFrame`` (a ``SystemFrame``, the
  analogue of the VAD frame that reaches the user aggregator) and calls
  ``self.broadcast_interruption()``, which is exactly what Pipecat 1.x's ``LLMUserAggregator`` /
  ``UserTurnProcessor`` do when a user-turn start strategy fires: it pushes an
  ``InterruptionFrame`` downstream and upstream.  (``push_interruption_task_frame_and_wait`` is
  deprecated and now just calls ``broadcast_interruption``; ``InterruptionWorkerFrame`` is the
  other 1.x route, which makes the worker queue an ``InterruptionFrame`` at the pipeline head.)
  ``t0 = perf_counter_ns()`` is taken immediately before ``broadcast_interruption()``.

Per trial: (1) push 500 ``TTSAudioRawFrame`` s (10 s of turn-*k* audio) from the source, then a
``StartResponseFrame``.  The audio is pushed first because the LLM processor's process task is
busy streaming once the response starts, so audio pushed after it would sit in the LLM's queue
rather than in the transport.  (2) Wait until at least 3 chunks of turn *k* were written and the
provider yielded at least 3 tokens, then a further uniform-random 0-20 ms (seeded) so the
interruption lands at a random phase of the 20 ms playout/token grid.  (3) Queue ``BargeInFrame``
into the source.  (4) Wait until the provider is closed and the transport has handled the
interruption, then 100 ms more (5 chunk periods) before the next trial.

Observing "silent": the transport overrides ``process_frame`` and, for an ``InterruptionFrame``,
takes ``t_flush = perf_counter_ns()`` right after ``super().process_frame()`` returns; by then
``MediaSender.handle_interruptions`` has reset the audio queue (dropping the buffered
interruptible audio) along with the rest of Pipecat's interruption handling (clock/video task
restart, ``BotStoppedSpeakingFrame``).  The reset (``FrameQueue.reset``) is synchronous, so the
audio task cannot write in the middle of it, and it drains the queue item by item, so with ~500
queued chunks it is most of the cost; what runs after it and is still counted here (mainly the
``BotStoppedSpeakingFrame`` broadcast) was about 0.1 ms on the 2-core development machine, so
``t_flush`` overstates the silence time by at most about that.  No private Pipecat state is read
to observe the flush.  The chunk that was already being played when the
interruption arrived was written before t0 and is not stale.  Any chunk of turn *k* written after
t0 is stale; stale frames are counted over the whole client log at the end of the run, so a
late straggler would be caught even during a later trial (none are expected: after the reset
the queue holds nothing of turn *k*, which the settle window would expose, at one chunk per
20 ms, if it were not so).

  ``t_silent = max(t_flush, last stale write of turn k)``
  ``interrupt_ms = (max(t_silent, t_closed) - t0) / 1e6``
  ``stale_frames`` = number of turn-*k* chunks written after t0, summed over trials.

Median and nearest-rank p99 as in (a), over 100 trials.

Output: human-readable lines, then (last line of stdout) one JSON object with the keys
``pipecat_version, hop_us_p50, hop_us_p99, events_per_s, interrupt_ms_p50, interrupt_ms_p99,
stale_frames, trials, paced_events, throughput_events``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as package_version

from loguru import logger

# Silence Pipecat's loguru output below WARNING *before* importing Pipecat (its package
# ``__init__`` logs a banner at INFO level on import).
logger.remove()
logger.add(sys.stderr, level="WARNING")

from pipecat.frames.frames import (  # noqa: E402
    DataFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.transports.base_output import BaseOutputTransport  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from stats import percentile  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

N_PASS_THROUGH = 10
HOP_DIVISOR = 10
WARMUP_EVENTS = 50
PACE_INTERVAL_NS = 1_000_000

SAMPLE_RATE = 16_000
CHUNK_MS = 20
CHUNK_BYTES = SAMPLE_RATE * CHUNK_MS // 1000 * 2  # mono PCM16: 640 bytes
TURN_AUDIO_FRAMES = 500  # 10 s of audio per turn
TURN_SAMPLE_BASE = 1000  # every sample of turn k's audio is TURN_SAMPLE_BASE + k
TOKEN_INTERVAL_S = 0.020
MAX_TOKENS = 1000
MIN_WRITES_BEFORE_BARGE_IN = 3
MIN_TOKENS_BEFORE_BARGE_IN = 3
SETTLE_S = 0.100
WAIT_TIMEOUT_S = 10.0
RNG_SEED = 20240601


# --------------------------------------------------------------------------------------------
# Pipeline lifecycle
# --------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_pipeline(processors: Sequence[FrameProcessor]) -> AsyncIterator[PipelineWorker]:
    """Run ``processors`` as a lean Pipeline on a PipelineWorker + WorkerRunner."""
    worker = PipelineWorker(
        Pipeline(list(processors)),
        params=PipelineParams(
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            enable_metrics=False,
            enable_usage_metrics=False,
            enable_heartbeats=False,
        ),
        enable_rtvi=False,
        enable_turn_tracking=False,
        enable_tracing=False,
        idle_timeout_secs=None,
    )
    started = asyncio.Event()

    async def _on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    worker.add_event_handler("on_pipeline_started", _on_started)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run_task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), WAIT_TIMEOUT_S)
        yield worker
    finally:
        await worker.cancel(reason="benchmark finished")
        await asyncio.wait_for(run_task, WAIT_TIMEOUT_S)


# --------------------------------------------------------------------------------------------
# (a) Per-hop overhead
# --------------------------------------------------------------------------------------------


@dataclass
class BenchFrame(DataFrame):
    """A benchmark event: its sequence number and the injection timestamp."""

    seq: int = 0
    inject_ns: int = 0


class PassThrough(FrameProcessor):
    """Forwards every frame unchanged."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class BenchSource(PassThrough):
    """Head of the pipeline; the driver emits events through its ``push_frame``."""


class ArrivalSink(FrameProcessor):
    """Records the arrival time of every ``BenchFrame``; forwards everything else."""

    def __init__(self) -> None:
        super().__init__(name="ArrivalSink")
        self.arrivals: list[int] = []
        self.injections: list[int] = []
        self._expected = 0
        self._received = 0
        self._done = asyncio.Event()

    def expect(self, n: int) -> None:
        self.arrivals = [0] * n
        self.injections = [0] * n
        self._expected = n
        self._received = 0
        self._done = asyncio.Event()

    async def wait_all(self) -> None:
        await asyncio.wait_for(self._done.wait(), WAIT_TIMEOUT_S * 6)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        now = time.perf_counter_ns()
        await super().process_frame(frame, direction)
        if isinstance(frame, BenchFrame):
            self.arrivals[frame.seq] = now
            self.injections[frame.seq] = frame.inject_ns
            self._received += 1
            if self._received == self._expected:
                self._done.set()
        else:
            await self.push_frame(frame, direction)


async def sleep_until_ns(target_ns: int) -> None:
    delay_ns = target_ns - time.perf_counter_ns()
    if delay_ns > 0:
        await asyncio.sleep(delay_ns / 1e9)


async def paced_run(
    n: int, sink: ArrivalSink, source: BenchSource, worker: PipelineWorker | None = None
) -> list[float]:
    """Inject ``n`` events 1 ms apart; return hop_us per event after warm-up."""
    gc.collect()
    sink.expect(n)
    start_ns = time.perf_counter_ns() + 5 * PACE_INTERVAL_NS
    for i in range(n):
        await sleep_until_ns(start_ns + i * PACE_INTERVAL_NS)
        frame = BenchFrame(seq=i)
        frame.inject_ns = time.perf_counter_ns()
        if worker is None:
            await source.push_frame(frame)
        else:
            await worker.queue_frame(frame)
    await sink.wait_all()
    return [
        (arr - inj) / HOP_DIVISOR / 1000.0
        for arr, inj in zip(
            sink.arrivals[WARMUP_EVENTS:], sink.injections[WARMUP_EVENTS:], strict=True
        )
    ]


async def throughput_run(n: int, sink: ArrivalSink, source: BenchSource) -> float:
    """Inject ``n`` events back-to-back; return events per second."""
    gc.collect()
    sink.expect(n)
    first_ns = time.perf_counter_ns()
    for i in range(n):
        frame = BenchFrame(seq=i)
        frame.inject_ns = time.perf_counter_ns()
        await source.push_frame(frame)
    await sink.wait_all()
    elapsed_s = (max(sink.arrivals) - first_ns) / 1e9
    return n / elapsed_s


@dataclass
class HopResults:
    hop_us: list[float]
    hop_us_worker_queue: list[float]
    events_per_s: float


async def bench_hops(paced_events: int, throughput_events: int) -> HopResults:
    source = BenchSource(name="BenchSource")
    passes = [PassThrough(name=f"PassThrough{i}") for i in range(N_PASS_THROUGH)]
    sink = ArrivalSink()
    async with running_pipeline([source, *passes, sink]) as worker:
        hop_us = await paced_run(paced_events, sink, source)
        hop_us_worker_queue = await paced_run(paced_events, sink, source, worker)
        events_per_s = await throughput_run(throughput_events, sink, source)
    return HopResults(hop_us, hop_us_worker_queue, events_per_s)


# --------------------------------------------------------------------------------------------
# (b) Interruption
# --------------------------------------------------------------------------------------------


@dataclass
class TrialState:
    """What one barge-in trial (turn) observed."""

    turn: int
    writes: int = 0
    tokens: int = 0
    t0_ns: int = 0
    closed_ns: int = 0
    flushed_ns: int = 0
    playing: asyncio.Event = field(default_factory=asyncio.Event)
    mid_stream: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    flushed: asyncio.Event = field(default_factory=asyncio.Event)


class Recorder:
    """Shared by the processors: the client's write log and the current trial."""

    def __init__(self) -> None:
        self.client_log: list[tuple[int, int]] = []  # (write time ns, turn)
        self.trials: list[TrialState] = []

    @property
    def current(self) -> TrialState:
        return self.trials[-1]

    def begin(self, turn: int) -> TrialState:
        self.trials.append(TrialState(turn=turn))
        return self.current

    def on_write(self, now_ns: int, turn: int) -> None:
        self.client_log.append((now_ns, turn))
        if self.trials and turn == self.current.turn:
            self.current.writes += 1
            if self.current.writes >= MIN_WRITES_BEFORE_BARGE_IN:
                self.current.playing.set()


def turn_audio(turn: int) -> bytes:
    """20 ms of mono PCM16 whose every sample identifies the turn."""
    return (TURN_SAMPLE_BASE + turn).to_bytes(2, "little", signed=True) * (CHUNK_BYTES // 2)


def audio_turn(audio: bytes) -> int:
    return int.from_bytes(audio[:2], "little", signed=True) - TURN_SAMPLE_BASE


@dataclass
class StartResponseFrame(DataFrame):
    """Trigger for the fake LLM (the analogue of ``LLMContextFrame``)."""

    turn: int = 0


@dataclass
class BargeInFrame(SystemFrame):
    """The analogue of the VAD/turn-start signal that reaches Pipecat's user aggregator."""


class BargeInSource(FrameProcessor):
    """Head of the pipeline; interrupts the bot like Pipecat's user aggregator does."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(name="BargeInSource")
        self._recorder = recorder

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BargeInFrame):
            self._recorder.current.t0_ns = time.perf_counter_ns()
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        else:
            await self.push_frame(frame, direction)


async def fake_provider_stream(state: TrialState) -> AsyncGenerator[str, None]:
    """A streaming provider: one token every 20 ms; records when it is closed."""
    try:
        next_s = time.perf_counter()
        for i in range(MAX_TOKENS):
            next_s += TOKEN_INTERVAL_S
            await asyncio.sleep(max(0.0, next_s - time.perf_counter()))
            state.tokens += 1
            if state.tokens >= MIN_TOKENS_BEFORE_BARGE_IN:
                state.mid_stream.set()
            yield f" tok{i}"
    finally:
        state.closed_ns = time.perf_counter_ns()
        state.closed.set()


class FakeStreamingLLM(FrameProcessor):
    """Streams a response inline on its process task, like Pipecat's LLM services.

    It does not handle ``InterruptionFrame`` itself: ``FrameProcessor.process_frame`` cancels
    and recreates the process task, which cancels the ``async for`` below and closes the stream.
    """

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(name="FakeStreamingLLM")
        self._recorder = recorder

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartResponseFrame):
            await self._stream_response(self._recorder.current)
        else:
            await self.push_frame(frame, direction)

    async def _stream_response(self, state: TrialState) -> None:
        async with contextlib.aclosing(fake_provider_stream(state)) as stream:
            async for token in stream:
                await self.push_frame(TextFrame(text=token))


class RecordingOutputTransport(BaseOutputTransport):
    """An output transport whose "client" records every audio chunk written to it."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(
            TransportParams(
                audio_out_enabled=True,
                audio_out_sample_rate=SAMPLE_RATE,
                audio_out_channels=1,
                audio_out_10ms_chunks=CHUNK_MS // 10,
                audio_out_end_silence_secs=0,
            ),
            name="RecordingOutputTransport",
        )
        self._recorder = recorder
        self._next_send_time = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            # super() has run MediaSender.handle_interruptions: the buffered audio is dropped.
            self._next_send_time = 0.0
            state = self._recorder.current
            state.flushed_ns = time.perf_counter_ns()
            state.flushed.set()

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self._recorder.on_write(time.perf_counter_ns(), audio_turn(frame.audio))
        await self._simulate_playout(len(frame.audio) / (self.sample_rate * 2))
        return True

    async def _simulate_playout(self, duration_s: float) -> None:
        # Same drift-free clock as Pipecat's websocket transports, at 1x real time.
        now = time.monotonic()
        sleep_s = max(0.0, self._next_send_time - now)
        await asyncio.sleep(sleep_s)
        if sleep_s == 0:
            self._next_send_time = time.monotonic() + duration_s
        else:
            self._next_send_time += duration_s


@dataclass
class InterruptResults:
    interrupt_ms: list[float]
    silent_ms: list[float]
    closed_ms: list[float]
    stale_frames: int


async def run_trial(
    turn: int, recorder: Recorder, source: BargeInSource, rng: random.Random
) -> None:
    state = recorder.begin(turn)
    for _ in range(TURN_AUDIO_FRAMES):
        await source.push_frame(
            TTSAudioRawFrame(audio=turn_audio(turn), sample_rate=SAMPLE_RATE, num_channels=1)
        )
    await source.push_frame(StartResponseFrame(turn=turn))
    await asyncio.wait_for(state.playing.wait(), WAIT_TIMEOUT_S)
    await asyncio.wait_for(state.mid_stream.wait(), WAIT_TIMEOUT_S)
    await asyncio.sleep(rng.uniform(0.0, CHUNK_MS / 1000))
    await source.queue_frame(BargeInFrame())
    await asyncio.wait_for(state.closed.wait(), WAIT_TIMEOUT_S)
    await asyncio.wait_for(state.flushed.wait(), WAIT_TIMEOUT_S)
    await asyncio.sleep(SETTLE_S)


async def bench_interruption(trials: int) -> InterruptResults:
    recorder = Recorder()
    source = BargeInSource(recorder)
    llm = FakeStreamingLLM(recorder)
    transport = RecordingOutputTransport(recorder)
    rng = random.Random(RNG_SEED)
    async with running_pipeline([source, llm, transport]):
        gc.collect()
        for turn in range(trials):
            await run_trial(turn, recorder, source, rng)

    interrupt_ms: list[float] = []
    silent_ms: list[float] = []
    closed_ms: list[float] = []
    stale_total = 0
    for state in recorder.trials:
        stale = [t for t, turn in recorder.client_log if turn == state.turn and t > state.t0_ns]
        stale_total += len(stale)
        silent_ns = max([state.flushed_ns, *stale])
        interrupt_ms.append((max(silent_ns, state.closed_ns) - state.t0_ns) / 1e6)
        silent_ms.append((silent_ns - state.t0_ns) / 1e6)
        closed_ms.append((state.closed_ns - state.t0_ns) / 1e6)
    return InterruptResults(interrupt_ms, silent_ms, closed_ms, stale_total)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def describe(label: str, values: Sequence[float], unit: str) -> str:
    return (
        f"{label}: n={len(values)} p50={statistics.median(values):.3f}{unit} "
        f"p99={percentile(list(values), 0.99):.3f}{unit} min={min(values):.3f}{unit} "
        f"max={max(values):.3f}{unit}"
    )


async def main_async(quick: bool) -> dict[str, object]:
    paced_events = 300 if quick else 2000
    throughput_events = 3000 if quick else 20000
    trials = 5 if quick else 100
    pipecat_version = package_version("pipecat-ai")

    print(f"pipecat-ai {pipecat_version}, python {sys.version.split()[0]}, quick={quick}")
    hops = await bench_hops(paced_events, throughput_events)
    print(describe("hop_us (source.push_frame, paced 1 ms)", hops.hop_us, "us"))
    print(describe("hop_us (worker.queue_frame, paced 1 ms)", hops.hop_us_worker_queue, "us"))
    print(f"throughput: {throughput_events} events, {hops.events_per_s:.0f} events/s")

    intr = await bench_interruption(trials)
    print(describe("interrupt_ms", intr.interrupt_ms, "ms"))
    print(describe("  silent (t_silent - t0)", intr.silent_ms, "ms"))
    print(describe("  LLM stream closed (t_closed - t0)", intr.closed_ms, "ms"))
    print(f"stale_frames (total over {trials} trials): {intr.stale_frames}")

    return {
        "pipecat_version": pipecat_version,
        "hop_us_p50": statistics.median(hops.hop_us),
        "hop_us_p99": percentile(hops.hop_us, 0.99),
        "events_per_s": hops.events_per_s,
        "interrupt_ms_p50": statistics.median(intr.interrupt_ms),
        "interrupt_ms_p99": percentile(intr.interrupt_ms, 0.99),
        "stale_frames": intr.stale_frames,
        "trials": trials,
        "paced_events": paced_events,
        "throughput_events": throughput_events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 300 paced, 3000 throughput, 5 trials"
    )
    args = parser.parse_args()
    result = asyncio.run(main_async(args.quick))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
