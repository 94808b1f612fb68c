"""The main job (the demo) and the command line."""

from __future__ import annotations

import json
import wave
from importlib.resources import files
from pathlib import Path

import pytest

from rspp.cli.main import main
from rspp.demo import DEMO_SCRIPT, run_demo, write_outputs


def test_the_demo_conversation_handles_its_barge_in() -> None:
    result = run_demo(virtual=True)
    assert [t.user for t in result.turns] == [user for user, _, _ in DEMO_SCRIPT]
    assert [t.reply for t in result.turns] == [reply for _, _, reply in DEMO_SCRIPT]
    barged = [t for t in result.turns if t.interrupted]
    assert [t.turn for t in barged] == [2]  # the caller talks over the second reply
    (cut,) = barged
    assert cut.reply.startswith(cut.heard) and 0 < len(cut.heard) < len(cut.reply) // 2
    for turn in result.turns:
        if not turn.interrupted:
            assert turn.heard == turn.reply
        lat = turn.latency
        assert lat is not None and lat.v2v_ms is not None and lat.kernel_us is not None
        # Voice-to-voice is the sum of the stages on the critical path.
        assert lat.asr_ms is not None and lat.llm_ttft_ms is not None
        assert lat.tts_ttfa_ms is not None and lat.output_ms is not None
        stages = lat.asr_ms + lat.llm_ttft_ms + lat.tts_ttfa_ms + lat.output_ms
        assert lat.v2v_ms == pytest.approx(stages, abs=0.1)
    assert cut.latency is not None and cut.latency.interrupted
    assert result.stats.errors.total() == 0
    assert result.stats.dropped("fenced") > 0


def test_demo_outputs(tmp_path: Path) -> None:
    result = run_demo(virtual=True)
    paths = write_outputs(result, tmp_path)
    with wave.open(str(paths[0])) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        seconds = wav.getnframes() / 16000
    heard_chars = sum(len(t.heard.strip()) for t in result.turns)
    assert seconds == pytest.approx(heard_chars * 0.060, rel=0.15)  # fake TTS: 60 ms per char
    transcript = json.loads(paths[1].read_text())
    assert [t["user"] for t in transcript] == [user for user, _, _ in DEMO_SCRIPT]
    kinds = {json.loads(line)["kind"] for line in paths[2].read_text().splitlines()}
    assert {"turn.commit", "turn.interrupted", "control.clear_buffer", "metrics"} <= kinds


def test_cli_demo_prints_the_latency_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--virtual", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "barge-in" in out and "interrupted after" in out and "V2V" in out
    assert (tmp_path / "bot.wav").exists()


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = str(files("rspp.pipelines") / "demo.toml")
    assert main(["validate", demo]) == 0
    assert "is valid" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[nodes]]\nname = "tts"\ntype = "fake_tts"\ninputs = ["input"]\n')
    assert main(["validate", str(bad)]) == 1
    assert "consumes 'llm.delta' but nothing upstream produces it" in capsys.readouterr().err


def test_cli_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kinds"]) == 0
    out = capsys.readouterr().out
    assert "audio.in" in out and "control.interrupt" in out
