"""The main job (the demo) and the command line."""

from __future__ import annotations

import json
import wave
from importlib.resources import files
from pathlib import Path

import pytest

from rspp.cli.main import main
from rspp.demo import DEMO_SCRIPT, run_demo
from rspp.report import write_outputs


def test_the_demo_conversation_handles_backchannel_barge_in_and_speculation() -> None:
    result = run_demo(virtual=True)
    answered = [line for line in DEMO_SCRIPT if line.reply is not None]
    assert [t.user for t in result.turns] == [line.user for line in answered]
    assert [t.reply for t in result.turns] == [line.reply for line in answered]
    # The "uh-huh" 2.5 s into the weather reply did not stop it (the output paused while
    # that was undecided, then resumed); "stop" 6.5 s in did.
    barged = [t for t in result.turns if t.interrupted]
    assert [t.user for t in barged] == ["What will the weather be like in Paris tomorrow?"]
    (cut,) = barged
    assert cut.latency is not None and cut.latency.interrupted
    kinds = [ev.kind for ev in result.events]
    assert kinds.count("control.pause") == 2 and kinds.count("control.resume") == 2
    assert 5500 < cut.latency.delivered_ms < 6800
    assert cut.reply.startswith(cut.heard) and 0 < len(cut.heard) < len(cut.reply)
    for turn in result.turns:
        if not turn.interrupted:
            assert turn.heard == turn.reply
    # Every reply was prepared speculatively; the late-corrected "Good night" missed once.
    spec = result.speculation
    assert spec.hits == len(answered) and spec.misses == 1 and spec.discarded == 0
    for turn in result.turns:
        lat = turn.latency
        assert lat is not None and lat.speculative and lat.saved_ms is not None
        assert lat.saved_ms > 100
        assert lat.v2v_ms is not None and lat.kernel_us is not None
        assert lat.endpoint_ms is not None and lat.llm_ttft_ms is not None
        assert lat.tts_ttfa_ms is not None
        # Generation started before the end of the turn, so the first audio came sooner
        # than the stages one after another would allow.
        assert lat.v2v_ms < lat.endpoint_ms + lat.llm_ttft_ms + lat.tts_ttfa_ms
    assert result.stats.errors.total() == 0


def test_demo_outputs(tmp_path: Path) -> None:
    result = run_demo(virtual=True)
    paths = write_outputs(result, tmp_path)
    with wave.open(str(paths[0])) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        seconds = wav.getnframes() / 16000
    heard_chars = sum(len(t.heard.strip()) for t in result.turns)
    assert seconds == pytest.approx(heard_chars * 0.060, rel=0.15)  # fake TTS: 60 ms per char
    with wave.open(str(paths[1])) as call:  # the whole call: user left, bot right
        assert call.getnchannels() == 2 and call.getnframes() / 16000 > seconds
    transcript = json.loads(paths[2].read_text())
    answered = [line.user for line in DEMO_SCRIPT if line.reply is not None]
    assert [t["user"] for t in transcript] == answered
    kinds = {json.loads(line)["kind"] for line in paths[3].read_text().splitlines()}
    assert {
        "turn.speculate",
        "turn.confirm",
        "control.pause",
        "control.resume",
        "turn.interrupted",
        "control.clear_buffer",
        "metrics",
    } <= kinds
    page = paths[4].read_text()
    assert page.count("<svg") == len(answered)  # one drawing per exchange
    for user in answered:
        assert user.replace("'", "&#x27;") in page


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
