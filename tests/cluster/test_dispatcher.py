"""The dispatcher fails a dead worker's sessions over at once, and a live one's never early.

A worker's *presence* in the store ends with its process; its leases still run to their
TTL. These tests hold a lease for a worker that never renews it (TTL 3 s) and watch
what the dispatcher tells a second worker: a take at once when the owner's presence
ends, and only after the TTL while the owner is present (a hung loop, a paused process)
or was never seen present (it may not have subscribed yet; an older worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import msgspec

from rspp.cluster import MemoryStore, SessionRecord, WorkerInfo
from rspp.cluster.dispatcher import Dispatcher, DispatcherConfig
from rspp.cluster.records import Task
from rspp.cluster.store import StoreError

TTL_MS = 3000
#: When the ghost dies: past the dispatcher's start-up grace (a lease TTL and two renewals).
DIES_S = 1.2


async def told_to_take(store: MemoryStore, worker: str, within_s: float) -> bool:
    """Whether ``worker`` is told to take a session within ``within_s``."""
    deadline = time.monotonic() + within_s
    after = "0"
    while (left := deadline - time.monotonic()) > 0:
        for entry_id, raw in await store.tasks(worker, after, int(left * 1000) + 1):
            after = entry_id
            if msgspec.msgpack.decode(raw, type=Task).do == "take":
                return True
    return False


class NoPresence(MemoryStore):
    """Fake store (around the dispatcher under test): one that cannot tell presence, as
    a Redis older than 7.0 (no sharded pub/sub) answers."""

    async def present(self, workers: Sequence[str]) -> list[bool]:
        raise StoreError("ERR unknown subcommand 'SHARDNUMSUB'")


async def scene(*, present: bool, dies: bool, store: MemoryStore | None = None) -> float:
    """``ghost`` owns s1 (never renewed); ``w2`` has room. Seconds until w2 is told to take s1."""
    store = store or MemoryStore()
    await store.create(SessionRecord(id="s1", pipeline="demo", state="running"), ttl_s=60)
    lease = await store.acquire("s1", "ghost", ttl_ms=TTL_MS)
    assert lease is not None
    began = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        alive = [tg.create_task(_beat(store, "ghost"))]
        if present:
            alive.append(tg.create_task(store.hold_presence("ghost")))
        beating = tg.create_task(_beat(store, "w2"))
        config = DispatcherConfig(id="d1", lease_ttl_ms=600)  # (its grace after a start)
        dispatcher = tg.create_task(Dispatcher(store, config).run())
        if dies:
            await asyncio.sleep(DIES_S)
            for task in alive:
                task.cancel()  # the ghost's process died
        told = await told_to_take(store, "w2", within_s=TTL_MS / 1000 + 1.0)
        took = time.monotonic() - began
        for task in (*alive, beating, dispatcher):
            task.cancel()
    assert told, "never failed over"
    return took


async def _beat(store: MemoryStore, wid: str) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await store.heartbeat(WorkerInfo(id=wid, pipelines=["demo"], capacity=4))
            await asyncio.sleep(0.1)


def test_a_worker_whose_presence_ends_is_failed_over_before_its_lease_ttl() -> None:
    took = asyncio.run(scene(present=True, dies=True))
    assert took < DIES_S + 0.8, f"taken {took - DIES_S:.2f} s after its presence ended"
    assert took < TTL_MS / 1000  # (not by the TTL)


def test_a_present_worker_that_stops_renewing_keeps_its_session_until_the_ttl() -> None:
    took = asyncio.run(scene(present=True, dies=False))
    assert took >= TTL_MS / 1000, f"taken after {took:.2f} s: before its TTL"


def test_a_worker_never_seen_present_is_judged_by_its_ttl_alone() -> None:
    took = asyncio.run(scene(present=False, dies=True))
    assert took >= TTL_MS / 1000, f"taken after {took:.2f} s: before its TTL"


def test_a_store_that_cannot_tell_presence_leaves_failover_to_the_ttl() -> None:
    """Not a crash of the dispatcher: it says so once and goes on by lease TTL."""
    took = asyncio.run(scene(present=True, dies=True, store=NoPresence()))
    assert took >= TTL_MS / 1000, f"taken after {took:.2f} s: before its TTL"
