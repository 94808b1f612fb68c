"""VirtualClock: asyncio in virtual time that jumps whenever the loop is idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from rspp.testing import VirtualClock, run_virtual


def test_a_long_sleep_is_instant_but_advances_loop_time() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time()

    wall = time.perf_counter()
    before, after = run_virtual(main())
    # An hour of virtual time; waited for in real time, it would take the hour. A minute
    # is generous however loaded the machine (the run takes milliseconds).
    assert time.perf_counter() - wall < 60.0
    assert before == 1000.0
    assert after - before == pytest.approx(3600.0, abs=1e-6)


def test_the_clock_starts_where_asked() -> None:
    async def main() -> float:
        return asyncio.get_running_loop().time()

    assert run_virtual(main(), start=5.0) == 5.0
    clock = VirtualClock(start=42.0)
    assert clock.now == 42.0
    assert clock.run(main()) == 42.0


def test_run_virtual_returns_the_coroutine_value() -> None:
    async def main() -> dict[str, int]:
        await asyncio.sleep(1)
        return {"answer": 42}

    assert run_virtual(main()) == {"answer": 42}


def test_exceptions_propagate() -> None:
    async def main() -> None:
        await asyncio.sleep(10)
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        run_virtual(main())


def test_call_later_timers_fire_in_order_at_their_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fired: list[tuple[str, float]] = []
        done = loop.create_future()

        def fire(name: str) -> None:
            fired.append((name, loop.time() - t0))
            if len(fired) == 5:
                done.set_result(None)

        loop.call_later(3.0, fire, "c")
        loop.call_later(1.0, fire, "a")
        loop.call_later(2.5, fire, "b")
        loop.call_later(1000.0, fire, "e")
        loop.call_at(t0 + 999.0, fire, "d")
        await done
        return fired

    fired = run_virtual(main())
    assert [name for name, _ in fired] == ["a", "b", "c", "d", "e"]
    assert [t for _, t in fired] == pytest.approx([1.0, 2.5, 3.0, 999.0, 1000.0], abs=1e-6)


def test_concurrent_sleepers_wake_in_time_order() -> None:
    async def main() -> list[int]:
        order: list[int] = []

        async def sleeper(n: int) -> None:
            await asyncio.sleep(n / 10)
            order.append(n)

        async with asyncio.TaskGroup() as tg:
            for n in [7, 3, 9, 1, 5]:
                tg.create_task(sleeper(n))
        return order

    assert run_virtual(main()) == [1, 3, 5, 7, 9]


def test_asyncio_timeout_works_in_virtual_time() -> None:
    async def main() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        timed_out = False
        try:
            async with asyncio.timeout(600.0):
                await asyncio.sleep(3600.0)
        except TimeoutError:
            timed_out = True
        return loop.time() - t0, timed_out

    wall = time.perf_counter()
    elapsed, timed_out = run_virtual(main())
    assert timed_out
    assert elapsed == pytest.approx(600.0, abs=1e-6)
    # The timeout fired after 10 virtual minutes; a real-time one would take the 10
    # minutes. A minute is generous however loaded the machine (the run takes milliseconds).
    assert time.perf_counter() - wall < 60.0


def test_wait_for_that_finishes_in_time_does_not_time_out() -> None:
    async def main() -> str:
        async def slow() -> str:
            await asyncio.sleep(4.0)
            return "made it"

        return await asyncio.wait_for(slow(), timeout=5.0)

    assert run_virtual(main()) == "made it"


def test_real_io_still_works() -> None:
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readline()
            writer.write(b"echo: " + data)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello\n")
            await writer.drain()
            reply = await reader.read()
            writer.close()
            await writer.wait_closed()
        return reply

    assert run_virtual(main()) == b"echo: hello\n"


def test_real_io_alongside_timers() -> None:
    """A pending timer elsewhere does not stop socket traffic from being served first."""

    async def main() -> tuple[list[bytes], float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        background = asyncio.create_task(asyncio.sleep(30.0))
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for word in [b"one\n", b"two\n", b"three\n"]:
                writer.write(word)
                await writer.drain()
                got.append(await reader.readline())
            writer.close()
            await writer.wait_closed()
        elapsed = loop.time() - t0
        await background
        return got, elapsed

    got, elapsed = run_virtual(main())
    assert got == [b"ONE\n", b"TWO\n", b"THREE\n"]
    assert elapsed < 30.0


def test_time_never_goes_backwards() -> None:
    clock = VirtualClock(start=10.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.now == 10.0
    clock.advance(0)
    clock.advance(2.5)
    assert clock.now == 12.5

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = [loop.time()]

        async def ticker(period: float) -> None:
            for _ in range(20):
                await asyncio.sleep(period)
                seen.append(loop.time())

        async with asyncio.TaskGroup() as tg:
            for period in (0.013, 0.02, 0.5, 0.0):
                tg.create_task(ticker(period))
        return seen

    seen = clock.run(main())
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(12.5 + 20 * 0.5, abs=1e-6)


def test_each_run_is_deterministic() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        stamps: list[float] = []

        async def worker(delay: float) -> None:
            for _ in range(5):
                await asyncio.sleep(delay)
                stamps.append(round(loop.time(), 9))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker(0.03))
            tg.create_task(worker(0.07))
        return stamps

    assert run_virtual(main()) == run_virtual(main())
