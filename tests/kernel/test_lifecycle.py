"""The session owns its lifetime, and everything in it is bounded.

Its tasks belong to its own owner task, not to the caller; closing is
idempotent and survives its caller being cancelled; a node that swallows
cancellation forever is abandoned and reported; ``push`` reports overload to its
caller, and nothing -- not an inline cascade, not a timer -- can grow an inbox
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from rspp.events import Error, TurnCommit
from rspp.kernel import Overloaded, SessionClosed
from rspp.testing import run_virtual

from .helpers import make_pipeline
from .toy_nodes import Job, SlowRelay, StallingRun


def stalling_pipeline(for_s: float) -> Any:
    return make_pipeline(
        [
            {"name": "llm", "type": "fake_llm", "inputs": ["input"]},
            {
                "name": "stall",
                "type": "stalling_run",
                "inputs": ["input"],
                "config": {"for_s": for_s},
            },
        ],
        inputs=("turn.commit",),
    )


def test_a_close_whose_caller_is_cancelled_still_finishes_and_a_second_close_waits_for_it() -> None:
    async def main() -> None:
        before = asyncio.all_tasks()
        session = stalling_pipeline(1.0).session()
        await session.start()
        session.push(TurnCommit(text="q"))
        closer = asyncio.create_task(session.close())
        await asyncio.sleep(0.1)  # the stalling node holds the close up
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        assert session.state == "closing"  # no more input, everything fenced ...
        with pytest.raises(SessionClosed):
            session.push(TurnCommit(text="late"))
        assert not all(t.done() for t in session.tasks)  # ... and still ending its tasks
        await session.close()  # the second close waits for the same end
        assert session.state == "closed"
        assert all(t.done() for t in session.tasks)
        assert session.stats.abandoned == []
        assert asyncio.all_tasks() == before
        stall: StallingRun = session.node("stall")
        assert stall.swallowed > 1  # it was cancelled again and again until it gave up

    run_virtual(main())


def test_a_node_that_ignores_cancellation_forever_is_abandoned_and_reported() -> None:
    errors: list[Error] = []

    async def main() -> None:
        session = stalling_pipeline(float("inf")).session(
            close_timeout_s=0.5, observers=[lambda e: isinstance(e, Error) and errors.append(e)]
        )
        async with session:
            await asyncio.sleep(0.01)  # its run() is going; then close: it never gives up
        assert session.state == "closed"
        (name,) = session.stats.abandoned
        assert name.endswith(":stall:run")
        assert [e.code for e in errors] == ["TaskAbandoned"]
        (task,) = session.owner.abandoned
        assert not task.done()
        stall: StallingRun = session.node("stall")
        stall.release.set()  # let it go, so the test leaves nothing running
        await asyncio.sleep(0.05)
        assert task.done() and not session.owner.abandoned

    run_virtual(main())


def test_the_host_task_is_never_cancelled_by_a_session_task_failing() -> None:
    pipeline = make_pipeline(
        [{"name": "dying", "type": "dying_run", "inputs": ["input"], "config": {"how": "base"}}],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        host = asyncio.current_task()
        assert host is not None
        async with pipeline.session() as session:
            await asyncio.sleep(1.0)  # the run() body let a BaseException out meanwhile
            assert host.cancelling() == 0
            assert session.failure is not None
        # ... and the host goes on after it.
        await asyncio.sleep(0.01)

    run_virtual(main())


def jobs_pipeline(*, fan_out: int | None = None, capacity: int = 4) -> Any:
    nodes: list[dict[str, Any]] = []
    upstream = "input"
    if fan_out is not None:
        nodes.append(
            {"name": "fan", "type": "fan_out", "inputs": ["input"], "config": {"out": fan_out}}
        )
        upstream = "fan"
    nodes += [
        {
            "name": "slow",
            "type": "slow_relay",
            "inputs": [upstream],
            "config": {"delay_ms": 10},
            "queue": {"capacity": capacity},
        },
        {"name": "sink", "type": "collect", "inputs": ["slow"]},
    ]
    return make_pipeline(nodes, inputs=("test.job",))


def test_push_reports_overload_and_writable_waits_for_room() -> None:
    async def main() -> None:
        async with jobs_pipeline().session() as session:
            pushed = 0
            with pytest.raises(Overloaded) as refused:
                for n in range(100):
                    session.push(Job(n=n))
                    pushed += 1
            assert refused.value.node == "slow" and refused.value.kind == "test.job"
            assert pushed == 4  # a full inbox under `block` refuses; nothing was dropped
            assert session.stats.rejected["overloaded"] == 1
            assert session.input_seq == 4  # the refused push took no input number
            for n in range(pushed, 30):
                await session.writable("test.job")
                session.push(Job(n=n))
            await asyncio.sleep(1.0)
            slow: SlowRelay = session.node("slow")
            assert [ev.n for ev in slow.handled] == list(range(30))  # type: ignore[attr-defined]
            assert session.stats.dropped() == 0

    run_virtual(main())


def test_an_inline_cascade_cannot_grow_an_inbox_without_bound() -> None:
    # Before, 100 pushes fanned out into 100,000 events in a capacity-4 inbox.
    errors: list[Error] = []

    async def main() -> None:
        pipeline = jobs_pipeline(fan_out=1000)
        async with pipeline.session(
            observers=[lambda e: isinstance(e, Error) and errors.append(e)]
        ) as session:
            inbox = session.runner("slow").inbox
            high = 0
            for n in range(100):
                with contextlib.suppress(Overloaded):
                    session.push(Job(n=n))
                high = max(high, len(inbox))
                await asyncio.sleep(0)
            assert high <= inbox.limit == 8
            assert session.stats.drops[("slow", "test.job", "overflow")] > 1000

    run_virtual(main())
    (error,) = errors  # reported once
    assert (error.source, error.code) == ("slow", "Overflow")
