"""The fake demo conversation: a scripted caller talks to the test kit's demo pipeline.

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
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from rspp.kernel import Pipeline, build, load_spec
from rspp.report import Recorder, SessionReport, report
from rspp.testing import ScriptedCaller, Utterance, VirtualClock

__all__ = ["DEMO_SCRIPT", "DemoLine", "demo_pipeline", "run_demo"]


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


async def _converse(script: list[DemoLine]) -> SessionReport:
    pipeline = demo_pipeline(script)
    recorder = Recorder()
    async with pipeline.session(
        "demo", sinks={"client": recorder.sink}, observers=[recorder]
    ) as session:
        caller = ScriptedCaller(session, recorder.sink, [line.utterance() for line in script])
        await caller.play()
    return report(session, recorder)


def run_demo(*, virtual: bool = False, script: list[DemoLine] | None = None) -> SessionReport:
    """Run the demo conversation and return what happened."""
    coro = _converse(script or DEMO_SCRIPT)
    if virtual:
        return VirtualClock().run(coro)
    return asyncio.run(coro)
