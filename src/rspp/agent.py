"""The embedded voice agent: the local pipeline, a scripted call, a file run.

``rspp demo`` plays recorded user speech (``rspp/assets/demo``, synthesized
once with the Piper voice and committed) into the local pipeline
(``rspp/pipelines/local.toml``: Silero VAD, PocketSphinx, the turn manager,
Gemma 3 270M, Piper) in real time, barge-in included. ``rspp run SPEC
--input FILE.wav`` plays any WAV into any pipeline. Both report what happened
(``rspp.report``).
"""

from __future__ import annotations

import asyncio
import time
import tomllib
import wave
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from rspp.events import AudioIn
from rspp.kernel import Pipeline, Session, build, load_spec
from rspp.kernel.node import Node
from rspp.kernel.turns import State
from rspp.report import Recorder, SessionReport, report
from rspp.testing import ScriptedCaller, Utterance

__all__ = [
    "LOCAL_SPEC",
    "DemoUtterance",
    "demo_script",
    "local_pipeline",
    "read_wav",
    "run_demo_call",
    "run_file",
]

LOCAL_SPEC = Path(str(files("rspp.pipelines") / "local.toml"))
_ASSETS = Path(str(files("rspp.assets") / "demo"))

Status = Callable[[str], None]


@dataclass(frozen=True)
class DemoUtterance:
    name: str
    text: str
    audio: bytes
    barge_in_after_ms: float | None = None


def read_wav(path: Path, sample_rate: int = 16000) -> bytes:
    """A WAV file as PCM16 mono at ``sample_rate`` (mixed down and resampled if needed)."""
    import numpy as np

    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels, rate = w.getnchannels(), w.getframerate()
        pcm: bytes = w.readframes(w.getnframes())
    if channels > 1:
        frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
        pcm = bytes(frames.mean(axis=1).astype("<i2").tobytes())
    if rate != sample_rate:
        from rspp.providers.local.piper import resample_pcm16

        pcm = resample_pcm16(pcm, rate, sample_rate)
    return pcm


def demo_script() -> list[DemoUtterance]:
    """The demo call: four questions; the third cuts into the bot's second answer."""
    lines = tomllib.loads((_ASSETS / "lines.toml").read_text())["lines"]
    barge = {"barge": 700.0}
    return [
        DemoUtterance(
            line["name"], line["text"], read_wav(_ASSETS / line["file"]), barge.get(line["name"])
        )
        for line in lines
    ]


def local_pipeline(spec: Path | None = None) -> Pipeline:
    """The embedded pipeline (or another spec)."""
    return build(load_spec(spec or LOCAL_SPEC))


async def preload(pipeline: Pipeline, status: Status = lambda _: None) -> None:
    """Load the models of every node, one at a time, saying which (off the event loop)."""
    for plan in pipeline.nodes:
        if plan.cls.preload.__func__ is not Node.preload.__func__:  # type: ignore[attr-defined]
            status(f"loading {plan.name} ({plan.type_name})")
            started = time.perf_counter()
            await asyncio.to_thread(plan.cls.preload, plan.config)
            status(f"loaded {plan.name} in {time.perf_counter() - started:.1f} s")


async def run_demo_call(
    pipeline: Pipeline | None = None,
    script: list[DemoUtterance] | None = None,
    status: Status = lambda _: None,
) -> SessionReport:
    """Play the demo call into ``pipeline`` (the local one by default) in real time."""
    pipeline = pipeline or local_pipeline()
    script = script or demo_script()
    recorder = Recorder()
    started = time.perf_counter()
    await preload(pipeline, status)
    async with pipeline.session(
        "demo", sinks={"client": recorder.sink}, observers=[recorder]
    ) as session:
        status(f"models loaded in {time.perf_counter() - started:.1f} s; the call starts")
        utterances = [
            Utterance(u.text, audio=u.audio, barge_in_after_ms=u.barge_in_after_ms) for u in script
        ]
        await ScriptedCaller(session, recorder.sink, utterances, max_wait_s=60.0).play()
    return report(session, recorder)


async def run_file(
    pipeline: Pipeline,
    audio: bytes,
    *,
    frame_ms: float = 20.0,
    tail_s: float = 15.0,
    status: Status = lambda _: None,
) -> SessionReport:
    """Play PCM16 audio into ``pipeline`` in real time, then wait for the bot to finish."""
    recorder = Recorder()
    rate = pipeline.spec.audio.sample_rate
    step = int(rate * frame_ms / 1000) * 2
    await preload(pipeline, status)
    async with pipeline.session(
        "run", sinks={"client": recorder.sink}, observers=[recorder]
    ) as session:
        status("playing the input")
        loop = asyncio.get_running_loop()
        start = loop.time()
        padded = audio + bytes(-len(audio) % step)
        silence = bytes(step)
        input_end = session.now_ns()
        total = len(padded) // step + int(tail_s * 1000 / frame_ms)
        for i in range(total):
            frame = padded[i * step : (i + 1) * step] if i * step < len(padded) else silence
            session.push(AudioIn(pcm=frame, sample_rate=rate))
            await asyncio.sleep(max(0.0, start + (i + 1) * frame_ms / 1000 - loop.time()))
            if i * step >= len(padded) and _quiet(session, recorder, since_ns=input_end):
                break  # the input is over and the bot has nothing more to say
            if i * step < len(padded):
                input_end = session.now_ns()
    return report(session, recorder)


def _quiet(session: Session, recorder: Recorder, since_ns: int, quiet_s: float = 3.0) -> bool:
    """No reply in progress, and for ``quiet_s`` no input and no event (a VAD decision, a
    transcript, a reply) came."""
    if session.turns.state is not State.LISTENING or recorder.user_turn_open:
        return False
    return session.now_ns() - max(since_ns, recorder.last_activity_ns) > quiet_s * 1e9
