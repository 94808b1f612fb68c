"""RecordingSink: what a session sent to the client, when, and waiting for it."""

from __future__ import annotations

import asyncio

import pytest

from rspp.events import AudioOut, ClearBuffer, LlmDelta, TurnDone, TurnInterrupted
from rspp.testing import RecordingSink, run_virtual, tone


def frame(turn: int, ms: float, text: str = "") -> AudioOut:
    return AudioOut(pcm=tone(ms), text=text, turn=turn)


def test_records_events_with_loop_time() -> None:
    sink = RecordingSink()

    async def main() -> None:
        sink.send(frame(1, 20))
        await asyncio.sleep(1.5)
        sink.send(ClearBuffer(turn=1))

    run_virtual(main(), start=100.0)
    assert [t for t, _ in sink.records] == [100_000_000_000, 101_500_000_000]
    assert [ev.kind for ev in sink.events] == ["audio.out", "control.clear_buffer"]


def test_queries() -> None:
    sink = RecordingSink()
    a1, a2, b1 = frame(1, 20, "hello "), frame(1, 40, "there"), frame(2, 10, "bye")

    async def main() -> None:
        for ev in [a1, LlmDelta(text="x"), a2, TurnDone(turn=1), b1]:
            sink.send(ev)
        assert sink.replies_ended == 1
        sink.send(TurnInterrupted(turn=2))

    run_virtual(main())
    assert sink.of_kind("audio.out") == [a1, a2, b1]
    assert sink.of_kind("llm.delta")[0].text == "x"  # type: ignore[attr-defined]
    assert sink.of_kind("nothing.like.this") == []
    assert sink.audio() == [a1, a2, b1]
    assert sink.audio(1) == [a1, a2]
    assert sink.audio(2) == [b1]
    assert sink.audio(3) == []
    assert sink.audio_ms() == pytest.approx(70.0)
    assert sink.audio_ms(1) == pytest.approx(60.0)
    assert sink.audio_ms(2) == pytest.approx(10.0)
    assert sink.pcm() == a1.pcm + a2.pcm + b1.pcm
    assert sink.replies_ended == 2


def test_empty_sink() -> None:
    sink = RecordingSink()
    assert sink.events == []
    assert sink.audio() == []
    assert sink.audio_ms() == 0
    assert sink.pcm() == b""
    assert sink.replies_ended == 0


def test_wait_for_wakes_when_the_predicate_becomes_true() -> None:
    sink = RecordingSink()

    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(1, 6):
            loop.call_later(i * 0.1, sink.send, frame(1, 20))
        await sink.wait_for(lambda: len(sink.audio()) >= 3)
        return loop.time() - t0, len(sink.audio())

    elapsed, count = run_virtual(main())
    assert elapsed == pytest.approx(0.3, abs=1e-6)
    assert count == 3


def test_wait_for_returns_at_once_if_already_true() -> None:
    sink = RecordingSink()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        sink.send(TurnDone(turn=1))
        t0 = loop.time()
        await sink.wait_for(lambda: sink.replies_ended == 1)
        return loop.time() - t0

    assert run_virtual(main()) == 0


def test_several_waiters_wake_on_their_own_conditions() -> None:
    sink = RecordingSink()

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        woke: dict[str, float] = {}

        async def waiter(name: str, n: int) -> None:
            await sink.wait_for(lambda: len(sink.events) >= n)
            woke[name] = loop.time() - t0

        for i in range(1, 5):
            loop.call_later(i, sink.send, LlmDelta(text=str(i)))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(waiter("two", 2))
            tg.create_task(waiter("four", 4))
            tg.create_task(waiter("one", 1))
        return woke

    woke = run_virtual(main())
    assert woke == pytest.approx({"one": 1.0, "two": 2.0, "four": 4.0}, abs=1e-6)


def test_wait_for_can_be_bounded_with_a_timeout() -> None:
    sink = RecordingSink()

    async def main() -> None:
        async with asyncio.timeout(2.0):
            await sink.wait_for(lambda: sink.replies_ended > 0)

    with pytest.raises(TimeoutError):
        run_virtual(main())
