"""The offline TTSs: they speak the text (Whisper hears it back), at a plausible length.

Plausible: between 1.5 and 5 words a second, with a speech level well above
silence. The round trip through Whisper tiny.en must come back within 20 % WER
(Piper) or 40 % (espeak-ng, a robotic voice that Whisper tiny mishears more: at
its default 175 words a minute "The weather in London" came back as "But
we're very long done").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from rspp.events import LlmDone, TtsAudio, TtsDone, TurnCommit
from rspp.providers.local.espeak import EspeakTts
from rspp.providers.local.piper import PiperTts, resample_pcm16
from rspp.providers.local.whisper import WhisperTranscriber
from tests.kernel.helpers import make_pipeline

from .audio import RATE, level_db, wer
from .feeding import until

TEXTS = [
    "The weather in London is mild today, with a light breeze from the west.",
    "Paris is the capital of France, and it has many museums.",
]


def check_speech(synthesize: Callable[[str], bytes], bound: float) -> None:
    heard = []
    for text in TEXTS:
        pcm = synthesize(text)
        seconds = len(pcm) / 2 / RATE
        words = len(text.split())
        assert 1.5 <= words / seconds <= 5.0, f"{words} words in {seconds:.2f} s"
        assert level_db(pcm) > -35.0, "speech, not silence"
        heard.append(WhisperTranscriber().transcribe(pcm, RATE))
    assert wer(TEXTS, heard) <= bound, heard


def test_piper_speaks_the_text() -> None:
    piper = PiperTts()
    check_speech(lambda text: piper.synthesize(text, sample_rate=RATE), 0.2)


def test_piper_speaks_sentence_by_sentence() -> None:
    pieces = list(PiperTts().sentences("Hello there. How are you today?", sample_rate=RATE))
    assert len(pieces) == 2
    assert all(level_db(pcm) > -35.0 for pcm, _ in pieces)


def test_espeak_speaks_the_text() -> None:
    espeak = EspeakTts()
    check_speech(
        lambda text: resample_pcm16(espeak.synthesize(text), espeak.native_rate, RATE), 0.4
    )


@pytest.mark.parametrize("tts_type", ["piper_tts", "espeak_tts"])
def test_the_node_streams_the_first_clause_before_the_reply_ends(tts_type: str) -> None:
    """A three-clause reply: audio of the first clause leaves before the LLM is done."""
    reply = "Sure, I can help with that. Paris is the capital of France. Anything else?"
    pipeline = make_pipeline(
        [
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["input"],
                # A slow fake LLM (named as such): ~3 s for the whole reply.
                "config": {"replies": [reply], "ttft_ms": 50.0, "tokens_per_s": 6.0},
            },
            {
                "name": "tts",
                "type": tts_type,
                "inputs": ["llm"],
                "config": {"chunking": "clause", "min_chars": 4},
            },
            {"name": "sink", "type": "collect", "inputs": ["tts", "llm"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        async with pipeline.session() as session:
            started = time.perf_counter()
            session.push(TurnCommit(text="can you help me"))
            seen = session.node("sink").seen
            arrival: dict[str, float] = {}

            def done() -> bool:
                for kind in ("tts.audio", "llm.done"):
                    if kind not in arrival and any(e.kind == kind for e in seen):
                        arrival[kind] = time.perf_counter() - started
                return any(isinstance(e, TtsDone) for e in seen)

            await until(done)
            assert any(isinstance(e, LlmDone) for e in seen)
            assert arrival["tts.audio"] < arrival["llm.done"], arrival
            pcm = b"".join(e.pcm for e in seen if isinstance(e, TtsAudio))
            assert level_db(pcm) > -35.0
            words = len(reply.split())
            assert 1.5 <= words / (len(pcm) / 2 / RATE) <= 5.0
            # Every word of the reply is attached to some audio (so barge-in can truncate).
            spoken = " ".join(e.text for e in seen if isinstance(e, TtsAudio) and e.text)
            assert spoken.split() == reply.split()

    asyncio.run(main())
