"""The embedded voice agent end to end, in real time: the README's first command, as a test.

The demo call plays the four committed recordings into the local pipeline
(Silero, Whisper tiny.en, turn manager, Gemma 3 270M, Piper); the caller cuts
into the second reply 0.7 s after its audio starts. The streaming variant
(PocketSphinx, speculation) gets the same call.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rspp.agent import LOCAL_SPEC, demo_script, local_pipeline, run_demo_call, run_file
from rspp.cli.main import main
from rspp.events import AudioOut, Error, TurnInterrupted
from rspp.providers.local import llama, piper, silero
from rspp.providers.local.llama import LlamaModel
from rspp.providers.local.piper import PiperTts
from rspp.providers.local.silero import SileroStream
from rspp.providers.local.whisper import WhisperTranscriber
from rspp.report import SessionReport, write_outputs

from .audio import ASSETS, level_db, recording, transcript, wer


@pytest.fixture(scope="module")
def call() -> SessionReport:
    return asyncio.run(run_demo_call())


def test_every_question_gets_a_spoken_answer(call: SessionReport) -> None:
    script = demo_script()
    assert not [e for e in call.events if isinstance(e, Error)]
    assert call.stats.errors.total() == 0
    assert len(call.turns) == len(script)
    # What the user said was understood (Whisper tiny.en: within its stated 15 % WER).
    assert wer([u.text for u in script], [t.user for t in call.turns]) <= 0.15
    for turn in call.turns:
        assert turn.reply.strip(), f"no reply to {turn.user!r}"
        assert turn.latency is not None and turn.latency.v2v_ms is not None
    assert level_db(call.bot_pcm) > -35.0


def test_the_barge_in_stops_the_bot_and_truncates_the_context(call: SessionReport) -> None:
    (cut,) = [t for t in call.turns if t.interrupted]
    assert cut is call.turns[1], "the caller cut into the second reply"
    # The user heard a part of the reply, and the conversation keeps only that part.
    assert len(cut.heard) < len(cut.reply)
    assert cut.reply.startswith(cut.heard.rstrip())
    for turn in call.turns:
        if not turn.interrupted:
            assert turn.heard.strip() == turn.reply.strip()
    # No audio of the interrupted reply was sent after the interruption.
    # (Dropped speculations are interrupted turns too: pick the reply's own.)
    (stop,) = [e for e in call.events if isinstance(e, TurnInterrupted) and e.turn == cut.turn]
    late = [e for e in call.events if isinstance(e, AudioOut) and e.turn == cut.turn]
    late = [e for e in late if e.seq > stop.seq]
    assert not late
    assert cut.latency is not None and cut.latency.interrupted
    assert 300 <= cut.latency.delivered_ms <= 3000  # cut ~0.7 s in (+ the caller's own delay)


def test_the_outputs_are_written(call: SessionReport, tmp_path: Path) -> None:
    paths = {p.name for p in write_outputs(call, tmp_path)}
    assert {"bot.wav", "call.wav", "transcript.json", "timeline.html"} <= paths


def _noting_threads(method: Callable[..., Any], threads: set[str]) -> Callable[..., Any]:
    """``method``, noting the name of every thread it runs on in ``threads``."""

    @functools.wraps(method)
    def noted(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return method(*args, **kwargs)

    return noted


def test_two_sessions_at_once_share_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls at the same time: both answered, models loaded once, inference off the loop.

    Where every model call ran is checked, not how long the loop stalled (a
    loaded machine stalls it anyway): benchmarks/local_stack.py measures the
    worst event-loop lag of two sessions like these.
    """
    pipeline = local_pipeline()
    audio = recording("weather")
    inference = {
        "silero": (SileroStream, "push"),
        "whisper": (WhisperTranscriber, "transcribe"),
        "gemma": (LlamaModel, "generate"),
        "piper": (PiperTts, "synthesize"),
    }
    threads: dict[str, set[str]] = {name: set() for name in inference}
    for name, (cls, method) in inference.items():
        monkeypatch.setattr(cls, method, _noting_threads(getattr(cls, method), threads[name]))
    loop_thread = ""

    async def main() -> list[SessionReport]:
        nonlocal loop_thread
        loop_thread = threading.current_thread().name
        async with asyncio.TaskGroup() as tg:
            calls = [tg.create_task(run_file(pipeline, audio, tail_s=12.0)) for _ in range(2)]
        return [c.result() for c in calls]

    loaders = (llama._load, piper._load, silero.silero_session)
    loads = [f.cache_info().misses for f in loaders]
    first, second = asyncio.run(main())
    # Each model was loaded at most once (not at all if an earlier test loaded it).
    assert all(f.cache_info().misses - n <= 1 for f, n in zip(loaders, loads, strict=True))
    for result in (first, second):
        assert result.turns and result.turns[0].reply.strip()
        assert result.stats.errors.total() == 0
    # Inference runs in the model thread pool, never on the event loop's thread: while
    # one session's model computes, the loop is free for the other session's events.
    for name, seen in threads.items():
        assert seen, f"{name} never ran"
        assert loop_thread not in seen, f"{name} ran on the event loop's thread"
        assert all(t.startswith("rspp-model") for t in seen), f"{name} ran on {seen}"


def test_the_streaming_pipeline_speculates_on_partials() -> None:
    """local_streaming.toml: PocketSphinx partials, replies prepared while the user pauses."""
    result = asyncio.run(
        run_demo_call(local_pipeline(LOCAL_SPEC.with_name("local_streaming.toml")))
    )
    assert result.stats.errors.total() == 0
    assert len(result.turns) == len(demo_script())
    assert all(t.reply.strip() for t in result.turns)
    assert [t.interrupted for t in result.turns] == [False, True, False, False]
    assert result.speculation.attempts >= 1 and result.speculation.hits >= 1


def test_rspp_run_plays_a_wav_through_a_spec(tmp_path: Path) -> None:
    out = tmp_path / "out"
    wav = ASSETS / "hello.wav"
    assert main(["run", str(LOCAL_SPEC), "--input", str(wav), "--out", str(out)]) == 0
    turns = json.loads((out / "transcript.json").read_text())
    assert len(turns) == 1 and turns[0]["reply"].strip()
    assert wer([transcript("hello")], [turns[0]["user"]]) <= 0.15
    with wave.open(str(out / "call.wav")) as call:
        assert call.getnchannels() == 2 and call.getnframes() > 0
