"""Both stores obey the same rules: leases and fencing, the input log, output, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from redis.crc import key_slot

from rspp.cluster import Fenced, Lease, SessionRecord, SessionStore, WorkerInfo, keys
from rspp.cluster.store import StoreError

Run = Callable[[Callable[[SessionStore], Any]], Any]


def test_a_session_keys_share_one_slot_so_lua_may_touch_them_together() -> None:
    sid = "call-1234"
    slots = {
        key_slot(name(sid).encode())
        for name in (keys.session, keys.lease, keys.snapshot, keys.input_log, keys.output)
    }
    assert len(slots) == 1
    assert key_slot(keys.session("another").encode()) not in slots or True  # may collide


def test_records_round_trip(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        assert await store.record("s1") is None
        await store.create(SessionRecord(id="s1", pipeline="demo"), ttl_s=60)
        await store.update("s1", state="running", worker="w1")
        got = await store.record("s1")
        assert got is not None
        assert (got.pipeline, got.state, got.worker) == ("demo", "running", "w1")

    with_store(body)


def test_one_owner_at_a_time_and_every_takeover_raises_the_token(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        first = await store.acquire("s1", "w1", ttl_ms=10_000)
        assert first is not None and first.token == 1
        assert await store.acquire("s1", "w2", ttl_ms=10_000) is None  # held
        again = await store.acquire("s1", "w1", ttl_ms=10_000)  # its own: re-acquired
        assert again is not None and again.token == 2
        assert await store.renew([first, again], ttl_ms=10_000) == [False, True]
        assert await store.lease_of("s1") == ("w1", 2, (await store.lease_of("s1"))[2])

    with_store(body)


def test_a_hand_over_writes_output_checkpoint_and_release_in_one_save(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        lease = await store.acquire("s1", "w1", ttl_ms=10_000)
        assert lease is not None
        await store.save(lease, b"cp-1", input_seq=0, output=[b"o1", b"o2"])
        assert await store.lease_of("s1") == ("w1", 1, (await store.lease_of("s1"))[2])
        await store.save(lease, b"cp-2", input_seq=0, output=[b"o3"], handoff="w2", hold_ms=5000)
        assert await store.load("s1") == b"cp-2"
        out = await store.read_output("s1", "0", 0)
        assert [payload for _, payload in out] == [b"o1", b"o2", b"o3"]
        owner, _, _ = await store.lease_of("s1")
        assert owner == ""  # released ...
        assert await store.acquire("s1", "w3", ttl_ms=10_000) is None  # ... to w2 alone
        taken = await store.acquire("s1", "w2", ttl_ms=10_000)
        assert taken is not None and taken.token == 2
        with pytest.raises(Fenced):  # the old owner, again: refused, and nothing written
            await store.save(lease, b"stale", input_seq=0, output=[b"stale"], handoff="")
        assert await store.load("s1") == b"cp-2"
        out = await store.read_output("s1", "0", 0)
        assert [payload for _, payload in out] == [b"o1", b"o2", b"o3"]

    with_store(body)


def test_a_lapsed_lease_is_taken_over_and_the_old_owner_is_fenced(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        old = await store.acquire("s1", "w1", ttl_ms=80)
        assert old is not None
        await store.append_output(old, [b"before"])
        await store.save(old, b"checkpoint-1", input_seq=0)
        await asyncio.sleep(0.15)
        assert await store.orphans() == ["s1"]
        assert await store.claim("s1", hold_ms=1000)
        assert not await store.claim("s1", hold_ms=1000)  # one dispatcher acts, not two
        new = await store.acquire("s1", "w2", ttl_ms=10_000)
        assert new is not None and new.token == old.token + 1
        # The old owner wakes up: it can neither write state nor speak.
        with pytest.raises(Fenced):
            await store.save(old, b"stale", input_seq=0)
        with pytest.raises(Fenced):
            await store.append_output(old, [b"stale"])
        assert await store.renew([old], ttl_ms=10_000) == [False]
        assert not await store.release(old)
        assert await store.load("s1") == b"checkpoint-1"
        out = await store.read_output("s1", "0", 0)
        assert [payload for _, payload in out] == [b"before"]
        await store.append_output(new, [b"after"])
        assert [p for _, p in await store.read_output("s1", out[-1][0], 0)] == [b"after"]

    with_store(body)


def test_a_lapsed_lease_that_nobody_took_is_renewed(with_store: Run) -> None:
    """A store outage outlasting the TTL must not end a call whose owner lives."""

    async def body(store: SessionStore) -> None:
        lease = await store.acquire("s1", "w1", ttl_ms=50)
        assert lease is not None
        await asyncio.sleep(0.1)
        assert await store.renew([lease], ttl_ms=10_000) == [True]
        owner, token, _ = await store.lease_of("s1")
        assert (owner, token) == ("w1", lease.token)

    with_store(body)


def test_a_release_to_a_worker_keeps_the_session_for_it(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        lease = await store.acquire("s1", "w1", ttl_ms=10_000)
        assert lease is not None
        assert await store.release(lease, to="w3", hold_ms=5_000)
        assert not await store.claim("s1", hold_ms=1000)  # a move is not an orphan
        assert await store.acquire("s1", "w2", ttl_ms=10_000) is None
        taken = await store.acquire("s1", "w3", ttl_ms=10_000)
        assert taken is not None and taken.token == lease.token + 1
        with pytest.raises(Fenced):
            await store.append_output(lease, [b"x"])

    with_store(body)


def test_a_finished_session_is_never_acquired_again(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        lease = await store.acquire("s1", "w1", ttl_ms=10_000)
        assert lease is not None
        await store.append_input("s1", [b"e1"])
        await store.save(lease, b"cp", input_seq=0)
        assert await store.finish(lease)
        assert await store.acquire("s1", "w2", ttl_ms=10_000) is None
        assert not await store.claim("s1", hold_ms=1000)
        assert await store.load("s1") is None
        assert await store.read_input("s1", 0, 0) == []
        assert "s1" not in await store.orphans()

    with_store(body)


def test_the_input_log_is_ordered_and_trimmed_only_behind_a_checkpoint(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        lease = await store.acquire("s1", "w1", ttl_ms=10_000)
        assert lease is not None
        await store.append_input("s1", [b"a", b"b"])
        last = await store.append_input("s1", [b"c"], close="hangup")
        entries = await store.read_input("s1", 0, 0)
        assert [(e, c) for _, e, c in entries] == [
            (b"a", None),
            (b"b", None),
            (b"c", None),
            (None, "hangup"),
        ]
        numbers = [n for n, _, _ in entries]
        assert numbers == sorted(numbers) and len(set(numbers)) == 4 and numbers[-1] == last
        # A checkpoint that has taken in "b": the log keeps only what came after it.
        await store.save(lease, b"cp", input_seq=numbers[1])
        kept = await store.read_input("s1", 0, 0)
        assert [n for n, _, _ in kept] == numbers[2:]
        assert [n for n, _, _ in await store.read_input("s1", numbers[2], 0)] == numbers[3:]

    with_store(body)


def test_a_blocked_reader_wakes_on_the_next_input(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        await store.append_input("s1", [b"old"])
        (first,) = await store.read_input("s1", 0, 0)

        async def later() -> None:
            await asyncio.sleep(0.05)
            await store.append_input("s1", [b"new"])

        async with asyncio.TaskGroup() as tg:
            tg.create_task(later())
            got = await store.read_input("s1", first[0], 2000)
        assert [e for _, e, _ in got] == [b"new"]
        assert await store.read_input("s1", got[0][0], 50) == []  # times out empty

    with_store(body)


def test_workers_are_listed_while_they_beat(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        await store.heartbeat(WorkerInfo(id="w1", pipelines=["demo"], capacity=10, active=3))
        await store.heartbeat(WorkerInfo(id="w2", pipelines=["demo"], capacity=10))
        found = {w.id: w for w in await store.workers(max_age_ms=1000)}
        assert set(found) == {"w1", "w2"} and found["w1"].room == 7
        await asyncio.sleep(0.12)
        await store.heartbeat(WorkerInfo(id="w2", pipelines=["demo"], capacity=10))
        assert [w.id for w in await store.workers(max_age_ms=100)] == ["w2"]

    with_store(body)


def test_a_worker_inbox_delivers_in_order(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        await store.tell("w1", b"t1")
        await store.tell("w1", b"t2")
        got = await store.tasks("w1", "0", 0)
        assert [t for _, t in got] == [b"t1", b"t2"]
        assert await store.tasks("w1", got[-1][0], 0) == []
        assert await store.tasks("w2", "0", 0) == []

    with_store(body)


def test_each_request_goes_to_one_dispatcher_and_an_unacknowledged_one_comes_back(
    with_store: Run,
) -> None:
    async def body(store: SessionStore) -> None:
        for n in range(4):
            await store.request(msgspec.msgpack.encode({"n": n}))
        a = await store.requests("d1", 0, reclaim_after_ms=60_000)
        b = await store.requests("d2", 0, reclaim_after_ms=60_000)
        assert len(a) == 4 and b == []
        await store.done([i for i, _ in a[:3]])
        # d1 died holding the last one: after the reclaim time, d2 gets it.
        await asyncio.sleep(0.1)
        again = await store.requests("d2", 0, reclaim_after_ms=50)
        assert [p for _, p in again] == [a[3][1]]
        await store.done([i for i, _ in again])
        assert await store.requests("d2", 0, reclaim_after_ms=50) == []

    with_store(body)


def test_many_blocking_reads_at_once_leave_room_for_renewals(with_store: Run) -> None:
    """A process holds one blocking read per session (150 here, more than redis-py's
    default pool of 100): its lease renewals must still get through."""

    async def body(store: SessionStore) -> None:
        lease = await store.acquire("s1", "w1", ttl_ms=10_000)
        assert lease is not None
        async with asyncio.TaskGroup() as tg:
            reads = [tg.create_task(store.read_input(f"r{n}", 0, 1000)) for n in range(150)]
            await asyncio.sleep(0.2)  # every read is waiting now, each on its connection
            assert await store.renew([lease], ttl_ms=10_000) == [True]
            await store.append_input("r7", [b"e"])
        assert [len(r.result()) for r in reads].count(1) == 1  # r7's read got its entry

    with_store(body)


def test_a_worker_is_present_while_it_holds_its_presence(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        assert await store.present(["w1", "w2"]) == [False, False]
        holding = asyncio.create_task(store.hold_presence("w1"))
        for _ in range(100):  # (a subscription on Redis takes a round trip)
            if await store.present(["w1", "w2"]) == [True, False]:
                break
            await asyncio.sleep(0.01)
        assert await store.present(["w1", "w2"]) == [True, False]
        holding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holding
        for _ in range(100):
            if await store.present(["w1"]) == [False]:
                break
            await asyncio.sleep(0.01)
        assert await store.present(["w1"]) == [False]

    with_store(body)


def test_what_a_worker_owns_is_known_and_a_dead_owners_lease_lapses_at_once(
    with_store: Run,
) -> None:
    async def body(store: SessionStore) -> None:
        a = await store.acquire("s1", "w1", ttl_ms=60_000)
        b = await store.acquire("s2", "w1", ttl_ms=60_000)
        c = await store.acquire("s3", "w2", ttl_ms=60_000)
        assert a and b and c
        await store.renew([a, b], ttl_ms=60_000)
        await store.renew([c], ttl_ms=60_000)
        assert sorted(await store.owned_by("w1")) == [("s1", 1), ("s2", 1)]
        assert await store.owned_by("w2") == [("s3", 1)]
        # Held: not claimable, unless named dead -- and then only with its owner and token.
        assert not await store.claim("s1", 5000)
        assert not await store.claim("s1", 5000, ("w2", 1))
        assert not await store.claim("s1", 5000, ("w1", 2))
        assert await store.claim("s1", 5000, ("w1", 1))
        assert not await store.claim("s1", 5000, ("w1", 1))  # (one claim per hold)
        taken = await store.acquire("s1", "w3", ttl_ms=60_000)  # lapsed: another may take it
        assert taken is not None and taken.token == 2
        assert await store.renew([a], ttl_ms=60_000) == [False]  # and the old one is fenced
        with pytest.raises(Fenced):
            await store.append_output(a, [b"late"])
        # Named dead wrongly: a live owner renews, and keeps it if nobody took it meanwhile.
        assert await store.claim("s2", 5000, ("w1", 1))
        assert await store.renew([b], ttl_ms=60_000) == [True]
        assert await store.acquire("s2", "w3", ttl_ms=60_000) is None

    with_store(body)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_presence_on_redis_is_made_again_after_the_server_restarts() -> None:
    """A restart drops every subscription; a live worker must be present again within the
    dispatchers' grace after an outage (a lease TTL and two renewals), or they would
    take its sessions for a dead worker's."""
    from rspp.cluster.redis_server import RedisServer
    from rspp.cluster.redis_store import RedisStore

    async def present_within(store: RedisStore, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(StoreError):
                if await store.present(["w1"]) == [True]:
                    return True
            await asyncio.sleep(0.01)
        return False

    async def body(server: RedisServer) -> None:
        holder, asker = RedisStore(server.url), RedisStore(server.url)
        holding = asyncio.create_task(holder.hold_presence("w1"))
        try:
            assert await present_within(asker, 2.0)
            await asyncio.to_thread(server.restart, 0.3)
            back = time.monotonic()
            assert await present_within(asker, 0.6), "not present again within 0.6 s"
            assert time.monotonic() - back < 0.6
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
            await holder.close()
            await asker.close()

    with RedisServer() as server:
        asyncio.run(asyncio.wait_for(body(server), 30))


def test_a_take_acquires_and_reads_what_a_new_owner_needs_in_one_step(with_store: Run) -> None:
    async def body(store: SessionStore) -> None:
        nothing = await store.take("s1", "w1", 10_000, 5)  # (granted; the worker finishes it)
        assert nothing is not None and nothing.record is None
        await store.create(SessionRecord(id="s2", pipeline="demo"), ttl_s=60)
        first = await store.take("s2", "w1", 10_000, 5)
        assert first is not None
        assert first.record is not None and first.record.pipeline == "demo"
        assert (first.checkpoint, first.tail) == (None, [])
        await store.save(first.lease, b"cp", input_seq=0, output=[b"o1", b"o2", b"o3"])
        assert await store.take("s2", "w2", 10_000, 5) is None  # held by w1
        await store.release(first.lease)
        again = await store.take("s2", "w2", 10_000, 2)
        assert again is not None and again.lease == Lease("s2", "w2", 2)
        assert (again.checkpoint, again.tail) == (b"cp", [b"o2", b"o3"])  # oldest first
        assert (await store.take("s2", "w2", 10_000, 0)) is not None  # its own: again
        assert await store.finish(Lease("s2", "w2", 3))
        assert await store.take("s2", "w3", 10_000, 5) is None  # ended

    with_store(body)


def test_warming_a_store_opens_its_connections_ahead(with_store: Run) -> None:
    """A dead worker's sessions are taken (and claimed) all at once: the connections for
    that burst are opened at start, not each on its critical path."""

    async def body(store: SessionStore) -> None:
        from rspp.cluster.store import warm

        redis = getattr(store, "redis", None)
        before = len(await redis.client_list()) if redis is not None else 0
        await warm(store, 6)
        if redis is not None:
            assert len(await redis.client_list()) >= before + 5  # (one may be the asker's)
        await store.now_ms()  # and it works as before

    with_store(body)
