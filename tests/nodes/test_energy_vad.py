"""EnergyVad: level measurement, start and hangover windows, the events it emits."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec
import numpy as np
import pytest

from rspp.events import AudioIn, Event
from rspp.kernel.session import Session, SessionSnapshot
from rspp.nodes.energy_vad import rms_dbfs
from rspp.testing import run_virtual, silence, speech_like
from tests.kernel.helpers import make_pipeline

FRAME_MS = 20.0
FRAME_NS = 20_000_000
RATE = 16000
VAD_KINDS = {"vad.speech_start", "vad.speech_end", "turn.start", "control.interrupt"}


# --------------------------------------------------------------------------- rms_dbfs


def test_rms_of_digital_silence_is_minus_infinity() -> None:
    assert rms_dbfs(silence(20)) == -math.inf
    assert rms_dbfs(b"") == -math.inf


def test_rms_of_full_scale_square_wave_is_zero_db() -> None:
    square = np.tile(np.array([32767] * 20 + [-32768] * 20, dtype="<i2"), 10).tobytes()
    assert rms_dbfs(square) == pytest.approx(0.0, abs=0.01)


def test_rms_of_minus_20_dbfs_sine_is_minus_23_db() -> None:
    t = np.arange(RATE) / RATE
    sine = (np.sin(2 * math.pi * 440 * t) * 32768 * 0.1).astype("<i2").tobytes()
    # A sine's RMS is its peak / sqrt(2): 3 dB below the peak level.
    assert rms_dbfs(sine) == pytest.approx(-20.0 - 10 * math.log10(2), abs=0.05)


def test_speech_like_audio_is_above_the_default_threshold() -> None:
    assert rms_dbfs(speech_like(20, seed=3)) > -45.0
    assert rms_dbfs(speech_like(20, level_db=-70.0)) < -45.0


# --------------------------------------------------------------------------- in a session


def vad_pipeline(**config: Any) -> Any:
    return make_pipeline(
        [{"name": "vad", "type": "energy_vad", "inputs": ["input"], "config": config}]
    )


class Feeder:
    """Pushes 20 ms frames at 20 ms virtual intervals; remembers when each was pushed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[Event] = []
        self.pushed: list[tuple[int, bool]] = []  # (time ns, voiced)
        self._seed = 0
        session.observe(self.events.append)

    async def frames(self, count: int, *, voiced: bool) -> None:
        for _ in range(count):
            self._seed += 1
            pcm = speech_like(FRAME_MS, seed=self._seed) if voiced else silence(FRAME_MS)
            self.pushed.append((self.session.now_ns(), voiced))
            self.session.push(AudioIn(pcm=pcm, sample_rate=RATE))
            await asyncio.sleep(FRAME_MS / 1000)

    def of_kind(self, kind: str) -> list[Event]:
        return [ev for ev in self.events if ev.kind == kind]

    def kinds(self) -> list[str]:
        """What the VAD said (session lifecycle events left out)."""
        return [ev.kind for ev in self.events if ev.kind in VAD_KINDS]


def run_vad(script: Any, **config: Any) -> Feeder:
    """Run ``script(feeder)`` against a session with one energy_vad node."""
    pipeline = vad_pipeline(**config)
    result: list[Feeder] = []

    async def main() -> None:
        async with pipeline.session() as session:
            feeder = Feeder(session)
            result.append(feeder)
            await script(feeder)

    run_virtual(main())
    return result[0]


def test_speech_starts_after_start_ms_with_the_first_voiced_frame_as_origin() -> None:
    seen_at: list[int] = []

    async def script(f: Feeder) -> None:
        await f.frames(5, voiced=False)
        for _ in range(6):
            await f.frames(1, voiced=True)
            if f.of_kind("vad.speech_start") and not seen_at:
                seen_at.append(len(f.pushed))

    f = run_vad(script, start_ms=60.0)
    (start,) = f.of_kind("vad.speech_start")
    first_voiced = f.pushed[5][0]
    assert start.origin_ns == first_voiced
    # Declared on the frame that completes 60 ms of voice: the 3rd voiced frame.
    assert seen_at == [5 + 3]
    assert f.kinds()[:3] == ["vad.speech_start", "turn.start", "control.interrupt"]
    assert f.of_kind("vad.speech_end") == []


def test_a_click_shorter_than_start_ms_is_ignored() -> None:
    async def script(f: Feeder) -> None:
        await f.frames(3, voiced=False)
        await f.frames(2, voiced=True)  # 40 ms < 60 ms
        await f.frames(3, voiced=False)
        await f.frames(2, voiced=True)  # another 40 ms: the runs do not add up
        await f.frames(20, voiced=False)

    f = run_vad(script, start_ms=60.0)
    assert f.kinds() == []


def test_speech_ends_after_hangover_with_origin_at_the_first_silent_frame() -> None:
    async def script(f: Feeder) -> None:
        await f.frames(2, voiced=False)
        await f.frames(25, voiced=True)  # 500 ms of speech
        await f.frames(14, voiced=False)  # 280 ms: not yet
        assert f.of_kind("vad.speech_end") == []
        await f.frames(1, voiced=False)  # 300 ms: now
        assert len(f.of_kind("vad.speech_end")) == 1
        await f.frames(20, voiced=False)

    f = run_vad(script, start_ms=60.0, hangover_ms=300.0)
    (start,) = f.of_kind("vad.speech_start")
    (end,) = f.of_kind("vad.speech_end")
    first_voiced, first_silent = f.pushed[2][0], f.pushed[27][0]
    assert start.origin_ns == first_voiced
    assert end.origin_ns == first_silent
    assert end.speech_ms == pytest.approx(500.0, abs=1e-3)
    assert end.speech_ms == pytest.approx((first_silent - first_voiced) / 1e6)


def test_turn_start_and_interrupt_accompany_speech_start() -> None:
    async def script(f: Feeder) -> None:
        await f.frames(4, voiced=True)

    f = run_vad(script)
    start, turn_start, interrupt = (
        f.of_kind("vad.speech_start")[0],
        f.of_kind("turn.start")[0],
        f.of_kind("control.interrupt")[0],
    )
    assert turn_start.origin_ns == start.origin_ns == interrupt.origin_ns
    assert start.seq < turn_start.seq < interrupt.seq


def test_no_interrupt_when_disabled() -> None:
    async def script(f: Feeder) -> None:
        await f.frames(4, voiced=True)
        await f.frames(20, voiced=False)

    f = run_vad(script, interrupt=False)
    assert f.kinds() == ["vad.speech_start", "turn.start", "vad.speech_end"]


def test_pauses_shorter_than_hangover_do_not_end_speech() -> None:
    async def script(f: Feeder) -> None:
        await f.frames(10, voiced=True)
        for _ in range(3):
            await f.frames(14, voiced=False)  # 280 ms pause
            await f.frames(1, voiced=True)
        await f.frames(15, voiced=False)

    f = run_vad(script, hangover_ms=300.0)
    assert len(f.of_kind("vad.speech_start")) == 1
    (end,) = f.of_kind("vad.speech_end")
    # Speech ran from the first frame to the silence after the last voiced frame.
    assert end.origin_ns == f.pushed[10 + 3 * 15][0]
    assert end.speech_ms == pytest.approx((10 + 3 * 15) * FRAME_MS, abs=1e-3)


def test_a_second_utterance_is_detected_again() -> None:
    async def script(f: Feeder) -> None:
        for _ in range(2):
            await f.frames(10, voiced=True)
            await f.frames(20, voiced=False)

    f = run_vad(script)
    starts = f.of_kind("vad.speech_start")
    ends = f.of_kind("vad.speech_end")
    assert [s.origin_ns for s in starts] == [f.pushed[0][0], f.pushed[30][0]]
    assert [e.origin_ns for e in ends] == [f.pushed[10][0], f.pushed[40][0]]
    assert [e.speech_ms for e in ends] == pytest.approx([200.0, 200.0])


def test_threshold_is_respected() -> None:
    async def script(f: Feeder) -> None:
        await f.frames(10, voiced=True)  # about -23 dBFS
        await f.frames(20, voiced=False)

    assert run_vad(script, threshold_db=-10.0).kinds() == []


def test_snapshot_and_restore_carry_state_mid_speech() -> None:
    pipeline = vad_pipeline(hangover_ms=300.0)
    ends: list[Event] = []

    async def main() -> None:
        async with pipeline.session() as first:
            f1 = Feeder(first)
            await f1.frames(10, voiced=True)
            await f1.frames(5, voiced=False)  # 100 ms into the hangover
            vad = first.node("vad")
            assert vad.speaking
            state = vad.snapshot()
            snap = first.snapshot()
        first_voiced, first_silent = f1.pushed[0][0], f1.pushed[10][0]
        # Through the wire format, as when a session moves between workers.
        wire = msgspec.msgpack.encode(snap)
        restored = msgspec.msgpack.decode(wire, type=SessionSnapshot)
        saved = restored.nodes["vad"]
        assert saved.type == "energy_vad"
        assert saved.state is not None
        assert msgspec.msgpack.decode(saved.state, type=type(state)) == state
        async with pipeline.session(snapshot=restored) as second:
            assert second.node("vad").speaking
            f2 = Feeder(second)
            await f2.frames(9, voiced=False)  # 100 + 180 ms: still speaking
            assert f2.of_kind("vad.speech_end") == []
            await f2.frames(1, voiced=False)  # 100 + 200 = 300 ms: ended
            ends.extend(f2.of_kind("vad.speech_end"))
            assert f2.of_kind("vad.speech_start") == []
        (end,) = ends
        assert end.origin_ns == first_silent
        assert end.speech_ms == pytest.approx((first_silent - first_voiced) / 1e6)

    run_virtual(main())


def test_restore_of_a_listening_state_needs_a_full_start_window() -> None:
    pipeline = vad_pipeline(start_ms=60.0)

    async def main() -> None:
        async with pipeline.session() as first:
            f1 = Feeder(first)
            await f1.frames(2, voiced=True)  # 40 ms of a 60 ms window
            state = first.node("vad").snapshot()
        async with pipeline.session() as second:
            second.node("vad").restore(state)
            f2 = Feeder(second)
            await f2.frames(1, voiced=True)  # completes the window begun before the move
            (start,) = f2.of_kind("vad.speech_start")
            assert start.origin_ns == f1.pushed[0][0]

    run_virtual(main())


def test_the_c_rms_path_decides_like_rms_dbfs_but_within_one_lsb() -> None:
    from rspp.nodes import energy_vad

    if energy_vad._rms is None:
        pytest.skip("no audioop on this Python")
    threshold_db = -45.0
    threshold = 32768.0 * 10.0 ** (threshold_db / 20.0)
    compared = 0
    for tenth in range(-600, -300, 5):
        for seed in range(3):
            pcm = speech_like(20, level_db=tenth / 10.0, seed=seed)
            exact = rms_dbfs(pcm) >= threshold_db
            fast = energy_vad._rms(pcm, 2) >= threshold
            true_rms = 32768.0 * 10.0 ** (rms_dbfs(pcm) / 20.0)
            if abs(true_rms - threshold) >= 1.0:
                assert fast == exact, (tenth, seed)
                compared += 1
    assert compared > 100
