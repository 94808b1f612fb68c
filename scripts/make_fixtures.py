"""Synthesize the demo's user utterances once, with the bundled Piper voice.

    .venv/bin/python scripts/make_fixtures.py

Writes 16 kHz mono PCM16 WAVs to src/rspp/assets/demo/ and a lines.toml with
their transcripts (the reference for the ASR word error rate tests). The WAVs
are committed: the demo and the tests never synthesize their input.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from rspp.providers.local.piper import PiperTts

OUT = Path(__file__).resolve().parent.parent / "src" / "rspp" / "assets" / "demo"

LINES = [
    ("hello", "Hi, who am I talking to?"),
    ("weather", "What can you tell me about the weather in Paris in the spring?"),
    ("barge", "Sorry, stop. Tell me about London instead."),
    ("thanks", "Thank you, that is all. Goodbye!"),
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tts = PiperTts()
    toml = ["# Transcripts of the demo's user utterances (made by scripts/make_fixtures.py)."]
    for name, text in LINES:
        pcm = tts.synthesize(text, sample_rate=16000, length_scale=1.05)
        samples = np.frombuffer(pcm, dtype="<i2")
        path = OUT / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(samples.tobytes())
        toml.append(f'\n[[lines]]\nname = "{name}"\nfile = "{path.name}"\ntext = "{text}"')
        print(f"{path}: {len(samples) / 16000:.2f} s")
    (OUT / "lines.toml").write_text("\n".join(toml) + "\n")


if __name__ == "__main__":
    main()
