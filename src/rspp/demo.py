"""The demo conversation: a scripted caller talks to the demo pipeline, barge-in included.

Until real models land, the pipeline is a real energy VAD, the kernel's own
nodes, and the test kit's fake ASR/LLM/TTS with realistic latency profiles.
The run is real time by default (the kernel on a real event loop), or
virtual time (``virtual=True``) for an instant, deterministic run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec

from rspp.events import Event, JsonCodec, LlmDelta, TurnCommit, TurnInterrupted
from rspp.kernel import Pipeline, TurnLatency, build, load_spec
from rspp.kernel.session import SessionStats
from rspp.testing import RecordingSink, ScriptedCaller, Utterance, VirtualClock, wav_bytes

__all__ = ["DEMO_SCRIPT", "DemoResult", "TurnReport", "demo_pipeline", "run_demo"]

#: (what the caller says, barge in after ms or None, what the fake LLM answers)
DEMO_SCRIPT: list[tuple[str, float | None, str]] = [
    (
        "Hi, who am I talking to?",
        None,
        "Hello! I am a demo voice agent running on the RSPP kernel.",
    ),
    (
        "What will the weather be like in Paris tomorrow?",
        None,
        "Tomorrow in Paris it will be mild and mostly cloudy, around fourteen degrees. "
        "There is a chance of light rain in the late afternoon, so take an umbrella. "
        "The wind will be light from the west, and the evening should be dry and cool.",
    ),
    (
        "Sorry, stop, I meant London.",
        1500.0,
        "No problem. In London tomorrow expect showers and about twelve degrees.",
    ),
    ("Great, thank you. Goodbye!", None, "You are welcome. Goodbye!"),
]


@dataclass
class TurnReport:
    """One turn of the demo, as the user experienced it."""

    turn: int
    user: str
    reply: str
    heard: str
    interrupted: bool
    latency: TurnLatency | None


@dataclass
class DemoResult:
    turns: list[TurnReport]
    stats: SessionStats
    bot_pcm: bytes
    events: list[Event] = field(default_factory=list)


Script = list[tuple[str, float | None, str]]


def demo_pipeline(script: Script = DEMO_SCRIPT, **llm_config: Any) -> Pipeline:
    """The packaged demo pipeline with the fakes scripted for ``script``.

    The fake ASR "hears" the user lines in order and the fake LLM answers with
    the scripted replies; ``llm_config`` overrides more of the LLM's config.
    """
    spec = load_spec(Path(str(files("rspp.pipelines") / "demo.toml")))
    for node in spec.nodes:
        if node.name == "asr":
            node.config["script"] = [user for user, _, _ in script]
        elif node.name == "llm":
            node.config["replies"] = [reply for _, _, reply in script]
            node.config.update(llm_config)
    return build(spec)


async def _converse(script: Script) -> DemoResult:
    pipeline = demo_pipeline(script)
    sink = RecordingSink()
    events: list[Event] = []
    async with pipeline.session("demo", sinks={"client": sink}, observers=[events.append]) as s:
        caller = ScriptedCaller(
            s,
            sink,
            [Utterance(user, barge_in_after_ms=barge) for user, barge, _ in script],
        )
        await caller.play()
    users = {ev.turn: ev.text for ev in events if isinstance(ev, TurnCommit)}
    replies: dict[int, str] = {}
    for ev in events:
        if isinstance(ev, LlmDelta):
            replies[ev.turn] = replies.get(ev.turn, "") + ev.text
    interrupted = {ev.turn for ev in events if isinstance(ev, TurnInterrupted)}
    latencies = {lat.turn: lat for lat in s.turn_latencies}
    turns = [
        TurnReport(
            turn=turn,
            user=user,
            reply=replies.get(turn, ""),
            heard="".join(f.text for f in sink.audio(turn)),
            interrupted=turn in interrupted,
            latency=latencies.get(turn),
        )
        for turn, user in sorted(users.items())
    ]
    return DemoResult(turns=turns, stats=s.stats, bot_pcm=sink.pcm(), events=events)


def run_demo(
    *, virtual: bool = False, script: list[tuple[str, float | None, str]] | None = None
) -> DemoResult:
    """Run the demo conversation and return what happened."""
    coro = _converse(script or DEMO_SCRIPT)
    if virtual:
        return VirtualClock().run(coro)
    return asyncio.run(coro)


def write_outputs(result: DemoResult, out: Path) -> list[Path]:
    """Write the bot audio (WAV), the transcript (JSON) and the event log (JSON lines)."""
    out.mkdir(parents=True, exist_ok=True)
    wav = out / "bot.wav"
    wav.write_bytes(wav_bytes(result.bot_pcm))
    transcript = out / "transcript.json"
    transcript.write_bytes(msgspec.json.format(msgspec.json.encode(result.turns)))
    log = out / "events.jsonl"
    codec = JsonCodec()
    with log.open("wb") as f:
        for ev in result.events:
            if ev.kind != "audio.out":
                f.write(codec.encode(ev) + b"\n")
    return [wav, transcript, log]
