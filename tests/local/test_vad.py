"""The model VADs on the committed recordings: they find the speech, and only the speech."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rspp.events import VadSpeechEnd, VadSpeechStart
from tests.kernel.helpers import make_pipeline

from .audio import LINES, RATE, frames, recording, speech_span_ms
from .feeding import T0, drained, push_frames


def vad_pipeline(vad_type: str, **config: object):  # type: ignore[no-untyped-def]
    return make_pipeline(
        [
            {
                "name": "vad",
                "type": vad_type,
                "inputs": ["input"],
                "config": {"interrupt": False, "hangover_ms": 400.0, **config},
                "queue": {"capacity": 5000},  # the test feeds faster than real time
            },
            {"name": "sink", "type": "collect", "inputs": ["vad"]},
        ]
    )


def segments(vad_type: str, pcm_frames: list[bytes]) -> list[tuple[float, float]]:
    """(start ms, end ms) of each speech segment the VAD found, in the audio's time."""

    async def main() -> list[tuple[float, float]]:
        async with vad_pipeline(vad_type).session() as session:
            push_frames(session, pcm_frames)
            await drained(session)
            seen = session.node("sink").seen
        starts = [(e.origin_ns - T0) / 1e6 for e in seen if isinstance(e, VadSpeechStart)]
        ends = [(e.origin_ns - T0) / 1e6 for e in seen if isinstance(e, VadSpeechEnd)]
        return list(zip(starts, ends, strict=True))

    return asyncio.run(main())


@pytest.mark.parametrize("vad_type", ["silero_vad", "webrtc_vad", "energy_vad"])
@pytest.mark.parametrize("name", [line["name"] for line in LINES])
def test_the_vad_finds_the_utterance(vad_type: str, name: str) -> None:
    pcm = recording(name)
    begin, end = speech_span_ms(pcm)
    found = segments(vad_type, frames(pcm, before_ms=500))
    assert found, f"{vad_type} heard nothing in {name}"
    # Speech starts where the recording's speech starts, and ends where it ends
    # (offset by the 500 ms of silence before it; a segment boundary is a frame or a chunk).
    assert found[0][0] == pytest.approx(500 + begin, abs=120)
    assert found[-1][1] == pytest.approx(500 + end, abs=150)


@pytest.mark.parametrize("vad_type", ["silero_vad", "webrtc_vad"])
def test_the_model_vads_ignore_silence_and_noise(vad_type: str) -> None:
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(RATE * 3) * 32768 * 10 ** (-55 / 20)).astype("<i2").tobytes()
    assert segments(vad_type, frames(noise)) == []
    assert segments(vad_type, frames(bytes(RATE * 2 * 2))) == []
