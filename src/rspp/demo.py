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
import functools
import itertools
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from rspp.kernel import Pipeline, build, load_spec
from rspp.report import Recorder, SessionReport, report
from rspp.testing import RecordingSink, ScriptedCaller, Utterance, VirtualClock

__all__ = ["DEMO_SCRIPT", "DemoLine", "caller_script", "demo_pipeline", "run_demo"]


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
    #: The words of each speech segment, when a recording has several (caller_script).
    segments: tuple[str, ...] = ()

    def asr_lines(self) -> list[dict[str, str | None]]:
        """What the fake ASR hears: one line per speech segment."""
        if len(self.segments) > 1:
            return [{"text": words, "partial": None} for words in self.segments]
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


#: What the fake LLM answers to each of the demo caller's recordings (``caller_script``).
CALLER_REPLIES = {
    "hello": "Hello! I am a demo voice agent running on the RSPP kernel.",
    "weather": "Spring in Paris is mild, with days around fifteen to twenty degrees, "
    "blossoming chestnut trees along the boulevards, and some showers, so bring a light "
    "coat. The evenings are long and cool, perfect for a walk by the Seine.",
    "barge": "No problem. In London expect showers and about twelve degrees.",
    "thanks": "You are welcome. Goodbye!",
}


@functools.cache
def caller_script() -> list[DemoLine]:
    """The demo caller's recordings (``rspp call --script demo``) as the fakes' script.

    The fake ASR "hears" one line per speech segment, and the demo pipeline's VAD
    finds several segments in some recordings (a pause at a comma), so each
    recording's words are spread over the segments the VAD finds in it -- found by
    running the VAD over the recording (virtual time) -- and a ``--fake`` server
    answers the demo caller line by line, as the real agent does.
    """
    from rspp.agent import demo_script

    return [
        DemoLine(
            u.text,
            CALLER_REPLIES.get(u.name, "I see."),
            barge_in_after_ms=u.barge_in_after_ms,
            segments=_spread(u.text, _segments(u.audio)),
        )
        for u in demo_script()
    ]


def _segments(pcm: bytes) -> int:
    """Speech segments the demo pipeline's VAD finds in ``pcm`` (16 kHz PCM16)."""
    from rspp.events import AudioIn

    ends = 0

    def seen(event: Any) -> None:
        nonlocal ends
        ends += event.kind == "vad.speech_end"

    async def run() -> None:
        async with demo_pipeline([]).session("count", sinks={"client": RecordingSink()}) as session:
            session.observe(seen)
            data = pcm + bytes(32000)  # and a second of silence
            for i in range(0, len(data) - 639, 640):
                session.push(AudioIn(pcm=data[i : i + 640]))
                await asyncio.sleep(0.02)

    VirtualClock(start=1.0).run(run())
    return max(1, ends)


def _spread(text: str, n: int) -> tuple[str, ...]:
    """``text``'s words over ``n`` segments: cut where people pause (after a full stop,
    then after a comma), else as evenly as the words go."""
    words = text.split()
    n = min(n, len(words))
    if n <= 1:
        return ()
    stops = [i + 1 for i, w in enumerate(words[:-1]) if w[-1] in ".?!;:"]
    commas = [i + 1 for i, w in enumerate(words[:-1]) if w[-1] == ","]
    cuts = sorted((stops + commas)[: n - 1])
    if len(cuts) < n - 1:
        cuts = [round(i * len(words) / n) for i in range(1, n)]
    bounds = [0, *cuts, len(words)]
    return tuple(" ".join(words[lo:hi]) for lo, hi in itertools.pairwise(bounds))


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
