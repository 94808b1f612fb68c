"""Feeding audio into a session faster than real time, with honest origin times."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rspp.events import AudioIn
from rspp.kernel import Session

FRAME_NS = 20_000_000
T0 = 10_000_000_000  # origin of the first frame: any clock will do, it only has to move on


def push_frames(session: Session, frames: list[bytes], start_ns: int = T0) -> int:
    """Push every frame at once, each stamped with its place in the audio; returns the end."""
    for i, pcm in enumerate(frames):
        session.push(AudioIn(pcm=pcm, origin_ns=start_ns + i * FRAME_NS))
    return start_ns + len(frames) * FRAME_NS


async def push_paced(
    session: Session, frames: list[bytes], *, keep_up: str, start_ns: int = T0
) -> int:
    """Push the frames one by one, each once node ``keep_up`` has handled the last.

    Faster than real time, but in the order a real-time stream would give: a
    node fed by both the ingress and ``keep_up`` (an ASR behind the VAD) sees
    the VAD's decisions among the frames they are about, not after all of them.
    """
    runner = session.runner(keep_up)
    for i, pcm in enumerate(frames):
        session.push(AudioIn(pcm=pcm, origin_ns=start_ns + i * FRAME_NS))
        await until(
            lambda: runner.inbox is None or not (len(runner.inbox) or runner.in_flight is not None),
            poll_s=0.0005,
        )
    return start_ns + len(frames) * FRAME_NS


async def drained(session: Session, *, timeout_s: float = 60.0) -> None:
    """Wait until every queued node has handled everything (the pipeline is idle)."""
    async with asyncio.timeout(timeout_s):
        idle_rounds = 0
        while idle_rounds < 3:
            await asyncio.sleep(0.05)
            busy = any(
                runner.inbox is not None and (len(runner.inbox) or runner.in_flight is not None)
                for runner in (session.runner(plan.name) for plan in session.pipeline.nodes)
            )
            idle_rounds = 0 if busy else idle_rounds + 1


async def until(
    predicate: Callable[[], bool], *, timeout_s: float = 30.0, poll_s: float = 0.005
) -> None:
    """Wait until ``predicate()`` holds, polling (what it reads has no wake-up of its own)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
