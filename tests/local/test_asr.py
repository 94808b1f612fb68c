"""The offline ASRs on the committed recordings, through the VAD, as in a call.

Stated accuracy (word error rate over the four demo recordings, with the VAD
cutting them at their pauses): Whisper tiny.en <= 15 %, PocketSphinx <= 45 %.
Measured when these tests were written: 9 % and 34 % on whole utterances.
"""

from __future__ import annotations

import asyncio

import pytest

from rspp.events import AsrFinal, AsrPartial, VadSpeechEnd
from rspp.kernel import Pipeline
from tests.kernel.helpers import make_pipeline

from .audio import LINES, frames, recording, transcript, wer
from .feeding import drained, push_paced


def asr_pipeline(asr_type: str) -> Pipeline:
    """Silero VAD and an ASR on the ingress, everything they say collected by "sink"."""
    return make_pipeline(
        [
            {
                "name": "vad",
                "type": "silero_vad",
                "inputs": ["input"],
                "config": {"interrupt": False, "hangover_ms": 300.0},
                "queue": {"capacity": 5000},
            },
            {
                "name": "asr",
                "type": asr_type,
                "inputs": ["input", "vad"],
                "queue": {"capacity": 5000},
            },
            {"name": "sink", "type": "collect", "inputs": ["asr", "vad"]},
        ]
    )


def hear(asr_type: str, name: str) -> tuple[str, list[AsrPartial], int]:
    """Play one recording; return the joined finals, the partials and the number of segments."""
    pipeline = asr_pipeline(asr_type)

    async def main() -> tuple[str, list[AsrPartial], int]:
        async with pipeline.session() as session:
            await push_paced(session, frames(recording(name)), keep_up="vad")
            await drained(session)
            seen = session.node("sink").seen
        finals = [e.text for e in seen if isinstance(e, AsrFinal)]
        ends = sum(isinstance(e, VadSpeechEnd) for e in seen)
        assert len(finals) == ends, "one final per speech segment"
        return " ".join(finals), [e for e in seen if isinstance(e, AsrPartial)], ends

    return asyncio.run(main())


@pytest.mark.parametrize(("asr_type", "bound"), [("whisper_asr", 0.15), ("pocketsphinx_asr", 0.45)])
def test_word_error_rate_on_the_demo_recordings(asr_type: str, bound: float) -> None:
    names = [line["name"] for line in LINES]
    heard = [hear(asr_type, name)[0] for name in names]
    rate = wer([transcript(n) for n in names], heard)
    assert rate <= bound, f"{asr_type}: WER {rate:.0%} > {bound:.0%}: {heard}"


def test_pocketsphinx_streams_partials_with_a_stable_prefix() -> None:
    final, partials, _ = hear("pocketsphinx_asr", "weather")
    assert len(partials) >= 5, "a partial hypothesis while the user speaks"
    for p in partials:
        assert p.text.startswith(p.stable)
    assert len(partials[-1].text.split()) >= len(partials[0].text.split())
    assert "weather" in final
