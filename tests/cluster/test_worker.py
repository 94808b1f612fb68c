"""A worker on its own: a drain that cannot hand a session over still ends at its deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rspp.cluster import MemoryStore, SessionRecord
from rspp.cluster.worker import Worker, WorkerConfig
from rspp.demo import demo_pipeline
from rspp.events import UserText, encode


def test_a_drain_past_its_deadline_stops_the_worker_and_the_session_lapses() -> None:
    async def body() -> None:
        store = MemoryStore()
        pipeline = demo_pipeline()
        worker = Worker(
            store, {pipeline.name: pipeline}, WorkerConfig(id="w1", drain_deadline_s=0.5)
        )
        run = asyncio.create_task(worker.run(load=False))
        await asyncio.sleep(0.05)
        await store.create(SessionRecord(id="s1", pipeline=pipeline.name), 60)
        await worker.take("s1", "open")
        assert "s1" in worker.sessions
        worker.drain()  # no other worker to take it: kept until the deadline
        await asyncio.wait_for(run, 5.0)
        assert worker.sessions == {}
        owner, token, _ = await store.lease_of("s1")
        assert (owner, token) == ("w1", 1)  # not finished: it lapses to whoever comes
        await asyncio.sleep(0.7)
        assert await store.orphans() == ["s1"]

    asyncio.run(asyncio.wait_for(body(), 20))


def test_a_drain_while_loading_stops_the_worker_once_loaded_owning_nothing() -> None:
    """SIGTERM during the model load (a pod stopped at start): no crash, a clean exit."""

    async def body() -> None:
        store = MemoryStore()
        pipeline = demo_pipeline()
        worker = Worker(store, {pipeline.name: pipeline}, WorkerConfig(id="w1"))
        worker.drain()  # before run(): what the signal handler does during the load
        assert worker.draining
        await asyncio.wait_for(worker.run(load=False), 5.0)
        assert worker.sessions == {}
        assert await store.workers(1000) == []  # it never announced itself

    asyncio.run(asyncio.wait_for(body(), 20))


def test_pipelines_must_be_keyed_by_their_names() -> None:
    pipeline = demo_pipeline()
    with pytest.raises(ValueError, match="keyed by their names"):
        Worker(MemoryStore(), {"other": pipeline})


class SlowSaves(MemoryStore):
    """A store whose checkpoint writes take 100 ms (a loaded Redis, say)."""

    async def save(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.1)
        await super().save(*args, **kwargs)


def test_a_hand_over_is_the_last_checkpoint_even_with_the_ticker_racing_it() -> None:
    """A hand-over's checkpoint is the last one, and it releases the lease: with slow saves
    and a 10 ms checkpoint ticker, the session still lands on the target, ``moved`` (a
    checkpoint written after the release would be refused as fenced: the session thought
    lost, the target never told, the call stalled until a failover)."""

    async def body() -> None:
        store = SlowSaves()
        pipeline = demo_pipeline()
        pipelines = {pipeline.name: pipeline}
        w1 = Worker(store, pipelines, WorkerConfig(id="w1", checkpoint_every_ms=10))
        w2 = Worker(store, pipelines, WorkerConfig(id="w2"))
        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(w.run(load=False)) for w in (w1, w2)]
            await asyncio.sleep(0.05)
            await store.create(SessionRecord(id="s1", pipeline=pipeline.name), 60)
            await w1.take("s1", "open")
            owned = w1.sessions["s1"]
            for n in range(5):  # input the ticker has not checkpointed yet
                await store.append_input("s1", [encode(UserText(text=f"hello {n}"))])
            await asyncio.sleep(0.005)
            await owned.hand_over("w2", "move")
            for _ in range(100):
                if "s1" in w2.sessions:
                    break
                await asyncio.sleep(0.01)
            assert owned.outcome == "moved"
            assert "s1" in w2.sessions and "s1" not in w1.sessions
            assert w2.sessions["s1"].lease.token == 2
            for w in (w1, w2):
                w.stop()
            await asyncio.gather(*runs)

    asyncio.run(asyncio.wait_for(body(), 20))
