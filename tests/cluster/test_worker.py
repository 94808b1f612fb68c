"""A worker on its own: a drain that cannot hand a session over still ends at its deadline."""

from __future__ import annotations

import asyncio

import pytest

from rspp.cluster import MemoryStore, SessionRecord
from rspp.cluster.worker import Worker, WorkerConfig
from rspp.demo import demo_pipeline


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
