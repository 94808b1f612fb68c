"""A call snapshotted mid-reply in one process and carried on in another (a real subprocess).

The demo pipeline (energy VAD, fake ASR, the turn manager, fake LLM and TTS, the
output) serves a scripted caller. In the middle of the second reply -- the LLM
still streaming, audio buffered -- this process takes a snapshot and stops. A
fresh Python process (``tests.kernel.restore_child``) restores it on a clock with
another origin, lets the reply finish and serves the rest of the call.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import msgspec

from rspp.demo import DemoLine, demo_pipeline
from rspp.kernel import SessionSnapshot
from rspp.testing import RecordingSink, ScriptedCaller, Utterance, VirtualClock

ROOT = Path(__file__).resolve().parents[2]

CALL = [
    DemoLine("Hello there.", "Hi! How can I help?"),
    DemoLine(
        "Tell me about the weather in Paris.",
        "Paris will be mild tomorrow, around fourteen degrees. There may be light rain in "
        "the afternoon, so take an umbrella. The evening should be dry and cool, with a "
        "light wind from the west. The weekend looks sunny and warmer, close to twenty "
        "degrees on Sunday. Next week starts grey again, with showers on Monday and "
        "Tuesday, and the temperatures fall back to the low teens.",
    ),
    DemoLine("And in London?", "London will see showers and about twelve degrees."),
    DemoLine("Thanks, bye.", "Goodbye!"),
]


class Outcome(msgspec.Struct):
    """What the child process saw."""

    moved: int
    frames: list[tuple[int, str, bytes]]
    ended: list[tuple[str, int]]
    history: list[tuple[str, str]]
    incarnations: list[int]
    first_pos: int
    errors: int


def utterances(lines: list[DemoLine]) -> list[Utterance]:
    return [Utterance(line.user, expects_reply=bool(line.reply)) for line in lines]


async def first_half() -> tuple[SessionSnapshot, RecordingSink]:
    sink = RecordingSink()
    async with demo_pipeline(CALL).session("call-7", sinks={"client": sink}) as session:
        caller = asyncio.create_task(ScriptedCaller(session, sink, utterances(CALL)).play())
        await sink.wait_for(lambda: len(sink.audio(2)) >= 25)  # 0.5 s into the second reply
        snap = session.snapshot()
        received = RecordingSink()
        received.records = list(sink.records)
        caller.cancel()
        return snap, received


def test_a_call_snapshotted_mid_reply_continues_in_another_process(tmp_path: Path) -> None:
    snap, before = VirtualClock(start=1000.0).run(first_half())
    assert snap.turns.state == "responding" and snap.turns.active == 2
    assert snap.in_flight  # the LLM and the TTS were in the middle of the reply
    (tmp_path / "snap.bin").write_bytes(msgspec.msgpack.encode(snap))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.kernel.restore_child", "snap.bin", "out.bin"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = msgspec.msgpack.decode((tmp_path / "out.bin").read_bytes(), type=Outcome)

    assert out.moved == 2
    # The second reply: what the client heard before the move, then after it, is the
    # whole reply exactly once -- nothing repeated, nothing skipped.
    heard_before = "".join(f.text for f in before.audio(2))
    heard_after = "".join(text for turn, text, _ in out.frames if turn == 2)
    assert heard_before and heard_after
    assert heard_before + heard_after == CALL[1].reply
    # The call went on: the rest of the caller's lines were answered, in full (their
    # numbers depend on the speculations the turn manager made on the way).
    assert [kind for kind, _ in out.ended] == ["turn.done"] * 3
    later = [turn for _, turn in out.ended[1:]]
    heard = ["".join(t for turn, t, _ in out.frames if turn == n) for n in later]
    assert heard == [CALL[2].reply, CALL[3].reply]
    assert out.history == [
        (role, text)
        for line in CALL
        for role, text in (("user", line.user), ("assistant", line.reply))
    ]  # type: ignore[misc]
    # The new incarnation's output is numbered after everything the old one sent.
    assert out.incarnations == [snap.incarnation + 1]
    assert out.first_pos == snap.pos + 1
    assert out.errors == 0
