"""The demo conversation: a scripted caller talks to the demo pipeline.

The pipeline (``rspp/pipelines/demo.toml``) is a real energy VAD, the turn
manager with speculation on, and the kernel's own nodes; the test kit's fake
ASR/LLM/TTS with realistic latency profiles stand in for models until real
ones land. The call has a backchannel ("uh-huh", which must not stop the bot)
and a real barge-in. The run is real time by default (the kernel on a real
event loop), or virtual time (``virtual=True``) for an instant, deterministic
run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec

from rspp.events import Event, JsonCodec, LlmDelta
from rspp.kernel import Pipeline, TurnLatency, build, load_spec
from rspp.kernel.latency import SpeculationStats
from rspp.kernel.session import SessionStats
from rspp.observability import Timeline, write_html
from rspp.testing import RecordingSink, ScriptedCaller, Utterance, VirtualClock, wav_bytes

__all__ = ["DEMO_SCRIPT", "DemoLine", "DemoResult", "TurnReport", "demo_pipeline", "run_demo"]


@dataclass(frozen=True)
class DemoLine:
    """What the caller says, when, and what the (fake) LLM answers; no reply: a backchannel."""

    user: str
    reply: str | None
    barge_in_after_ms: float | None = None
    #: What the recogniser believes while the user speaks, when it corrects itself late.
    partial: str | None = None
    #: The caller hesitates after this many words (two speech segments, one transcript).
    hesitate_after_words: int | None = None

    def asr_lines(self) -> list[dict[str, str | None]]:
        """What the fake ASR hears: one line per speech segment."""
        if not self.hesitate_after_words:
            return [{"text": self.user, "partial": self.partial}]
        words = self.user.split()
        k = self.hesitate_after_words
        return [
            {"text": " ".join(words[:k]), "partial": None},
            {"text": " ".join(words[k:]), "partial": None},
        ]

    def utterance(self) -> Utterance:
        """What the scripted caller says."""
        return Utterance(
            self.user,
            barge_in_after_ms=self.barge_in_after_ms,
            expects_reply=self.reply is not None,
            hesitate_after_words=self.hesitate_after_words,
        )


DEMO_SCRIPT: list[DemoLine] = [
    DemoLine(
        "Hi, who am I talking to?",
        "Hello! I am a demo voice agent running on the RSPP kernel.",
    ),
    DemoLine(
        "What will the weather be like in Paris tomorrow?",
        "Tomorrow in Paris it will be mild and mostly cloudy, around fourteen degrees. "
        "There is a chance of light rain in the late afternoon, so take an umbrella. "
        "The wind will be light from the west, and the evening should be dry and cool.",
    ),
    DemoLine("Uh-huh.", None, barge_in_after_ms=2500.0),
    DemoLine(
        "Sorry, stop, I meant London.",
        "No problem. In London tomorrow expect showers and about twelve degrees.",
        barge_in_after_ms=6500.0,
    ),
    DemoLine(
        "Great, thank you. Goodbye!",
        "You are welcome. Goodbye!",
        partial="Great, thank you. Good night",
    ),
]


def demo_pipeline(script: list[DemoLine] = DEMO_SCRIPT, **overrides: Any) -> Pipeline:
    """The packaged demo pipeline with the fakes scripted for ``script``.

    The fake ASR "hears" the lines in order and the fake LLM answers each user
    line with its scripted reply. ``overrides`` maps a node name to config
    values to change (``turns={"speculate": False}``).
    """
    spec = load_spec(Path(str(files("rspp.pipelines") / "demo.toml")))
    for node in spec.nodes:
        if node.name == "asr":
            node.config["script"] = [seg for line in script for seg in line.asr_lines()]
        elif node.name == "llm":
            node.config["replies"] = {line.user: line.reply for line in script if line.reply}
        node.config.update(overrides.get(node.name, {}))
    return build(spec)


@dataclass
class TurnReport:
    """One exchange of the demo, as the user experienced it."""

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
    speculation: SpeculationStats
    bot_pcm: bytes
    timeline: Timeline
    events: list[Event] = field(default_factory=list)


async def _converse(script: list[DemoLine]) -> DemoResult:
    pipeline = demo_pipeline(script)
    sink = RecordingSink()
    events: list[Event] = []
    timeline = Timeline()
    async with pipeline.session(
        "demo", sinks={"client": sink}, observers=[events.append, timeline]
    ) as session:
        caller = ScriptedCaller(session, sink, [line.utterance() for line in script])
        await caller.play()
    generated: dict[int, str] = {}
    for ev in events:
        if isinstance(ev, LlmDelta):
            generated[ev.turn] = generated.get(ev.turn, "") + ev.text
    latencies = {lat.turn: lat for lat in session.turn_latencies}
    history = session.conversation.history()
    turns = []
    for user, assistant in zip(history[::2], history[1::2], strict=False):
        turns.append(
            TurnReport(
                turn=assistant.turn,
                user=user.text,
                reply=generated.get(assistant.turn, ""),
                heard=assistant.text,
                interrupted=assistant.interrupted,
                latency=latencies.get(assistant.turn),
            )
        )
    return DemoResult(
        turns=turns,
        stats=session.stats,
        speculation=session.speculation,
        bot_pcm=sink.pcm(),
        timeline=timeline,
        events=events,
    )


def run_demo(*, virtual: bool = False, script: list[DemoLine] | None = None) -> DemoResult:
    """Run the demo conversation and return what happened."""
    coro = _converse(script or DEMO_SCRIPT)
    if virtual:
        return VirtualClock().run(coro)
    return asyncio.run(coro)


def write_outputs(result: DemoResult, out: Path) -> list[Path]:
    """Write the bot audio (WAV), the transcript (JSON), the events (JSON lines), the timeline."""
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
    timeline = write_html(result.timeline, out / "timeline.html", "RSPP demo call")
    return [wav, transcript, log, timeline]
