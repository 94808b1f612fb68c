"""Helpers for the tests of the offline models: the committed recordings, levels, WER."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from rspp.agent import read_wav
from rspp.dialog.matching import normalize, word_edits

ASSETS = Path(__file__).resolve().parents[2] / "src" / "rspp" / "assets" / "demo"
LINES = tomllib.loads((ASSETS / "lines.toml").read_text())["lines"]
RATE = 16000


def recording(name: str) -> bytes:
    (line,) = [line for line in LINES if line["name"] == name]
    return read_wav(ASSETS / line["file"])


def transcript(name: str) -> str:
    (line,) = [line for line in LINES if line["name"] == name]
    return str(line["text"])


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over a set: total word edits over total reference words."""
    edits = sum(
        word_edits(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)
    )
    return edits / sum(len(normalize(r).split()) for r in references)


def level_db(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = np.sqrt(np.mean(samples**2)) if samples.size else 0.0
    return 20 * np.log10(max(rms, 1e-9) / 32768)


def speech_span_ms(
    pcm: bytes, threshold_db: float = -40.0, frame_ms: int = 10
) -> tuple[float, float]:
    """Where the speech in a clean recording starts and ends (by level), in ms."""
    step = RATE * frame_ms // 1000 * 2
    loud = [i for i in range(0, len(pcm), step) if level_db(pcm[i : i + step]) > threshold_db]
    return loud[0] / 2 / RATE * 1000, (loud[-1] + step) / 2 / RATE * 1000


def frames(
    pcm: bytes, *, before_ms: int = 500, after_ms: int = 1000, frame_ms: int = 20
) -> list[bytes]:
    """The recording cut into frames, with silence around it."""
    step = RATE * frame_ms // 1000 * 2
    padded = bytes(RATE * before_ms // 1000 * 2) + pcm + bytes(RATE * after_ms // 1000 * 2)
    padded += bytes(-len(padded) % step)
    return [padded[i : i + step] for i in range(0, len(padded), step)]
