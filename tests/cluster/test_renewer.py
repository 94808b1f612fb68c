"""The lease renewer's thread: it keeps a busy worker's leases, and drops a hung one's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from rspp.cluster.records import Lease
from rspp.cluster.redis_server import RedisServer
from rspp.cluster.redis_store import RedisStore
from rspp.cluster.renewer import Renewer
from rspp.cluster.store import StoreError

TTL_MS = 600


class Answers:
    """What the renewer told the loop."""

    def __init__(self) -> None:
        self.rounds: list[list[bool]] = []
        self.trouble: list[StoreError] = []

    def result(self, leases: Sequence[Lease], results: list[bool], took_s: float) -> None:
        self.rounds.append(results)

    def problem(self, leases: Sequence[Lease], exc: StoreError) -> None:
        self.trouble.append(exc)


async def renewing(store: RedisStore, answers: Answers) -> tuple[Renewer, Lease]:
    lease = await store.acquire("s1", "w1", ttl_ms=TTL_MS)
    assert lease is not None
    renewer = Renewer(
        store.fork,
        ttl_ms=TTL_MS,
        every_s=0.15,
        alive_within_s=0.4,
        on_result=answers.result,
        on_trouble=answers.problem,
    )
    renewer.tick((lease,))
    renewer.start()
    return renewer, lease


def test_a_loop_busy_in_long_stretches_keeps_its_lease(redis_server: RedisServer) -> None:
    """The loop blocks 300 ms at a time (a renewal made from it would come every ~750 ms,
    past the 600 ms TTL); it still ticks between stretches, so the thread renews."""

    async def body() -> None:
        store = RedisStore(redis_server.url)
        await store.redis.flushdb()
        answers = Answers()
        renewer, lease = await renewing(store, answers)
        try:
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                time.sleep(0.3)  # noqa: ASYNC251 (a saturated loop: nothing else of it runs)
                renewer.tick((lease,))
                await asyncio.sleep(0)
                assert await store.orphans() == []  # never lapsed
            owner, token, _ = await store.lease_of("s1")
            assert (owner, token) == ("w1", lease.token)
        finally:
            await renewer.stop()
            await store.close()
        assert len(answers.rounds) >= 10 and all(r == [True] for r in answers.rounds)
        assert not answers.trouble

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_hung_loop_is_not_vouched_for_and_its_lease_lapses(redis_server: RedisServer) -> None:
    async def body() -> None:
        store = RedisStore(redis_server.url)
        await store.redis.flushdb()
        answers = Answers()
        renewer, _ = await renewing(store, answers)
        try:
            await asyncio.sleep(0.5)
            assert await store.orphans() == []
            time.sleep(1.5)  # noqa: ASYNC251 (hung: no tick past alive_within_s and the TTL)
            assert await store.orphans() == ["s1"]  # a dispatcher would fail it over now
            assert renewer.skipped > 0
        finally:
            await renewer.stop()
            await store.close()

    asyncio.run(asyncio.wait_for(body(), 30))
