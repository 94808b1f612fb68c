"""The Lua scripts of the Redis store follow the lease rules of ``LeaseState``, step by step.

Random sequences of acquire (and take: acquire and read), renew, release, finish,
claim (also naming a lease as dead) and fenced writes by
three workers, with TTLs and holds that are either "already over" (0) or
"forever" (so no result depends on the exact clock), run on the pure rules
and on a real Redis; every result must agree.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rspp.cluster import Fenced, Lease
from rspp.cluster.lease import LeaseState
from rspp.cluster.redis_server import RedisServer
from rspp.cluster.redis_store import RedisStore

FOREVER = 10**9
WORKERS = ("w1", "w2", "w3")

op = st.tuples(
    st.sampled_from(
        ["acquire", "take", "renew", "release", "finish", "claim", "claim_dead", "write"]
    ),
    st.sampled_from(WORKERS),
    st.sampled_from([0, FOREVER]),
    st.integers(0, 3),  # which of the tokens seen so far (stale ones included)
    st.sampled_from(["", *WORKERS]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_the_redis_scripts_agree_with_the_lease_rules(
    redis_server: RedisServer, ops: list[tuple[str, str, int, int, str]]
) -> None:
    asyncio.run(_compare(redis_server.url, ops))


async def _compare(url: str, ops: list[tuple[str, str, int, int, str]]) -> None:
    store = RedisStore(url)
    await store.redis.flushdb()
    model = LeaseState()
    tokens = [0]
    try:
        for name, worker, ttl, which, to in ops:
            now = await store.now_ms()
            token = tokens[min(which, len(tokens) - 1)]
            lease = Lease("s", worker, token)
            if name == "acquire":
                want = model.acquire(worker, ttl, now)
                got = await store.acquire("s", worker, ttl)
                assert (got is not None) == want, (name, worker, ttl)
                if got is not None:
                    assert got.token == model.token
                    tokens.insert(0, got.token)
            elif name == "take":  # (the acquire rule, with the reads after it)
                want = model.acquire(worker, ttl, now)
                taken = await store.take("s", worker, ttl, 10)
                assert (taken is not None) == want, (name, worker, ttl)
                if taken is not None:
                    assert taken.lease.token == model.token
                    tokens.insert(0, taken.lease.token)
            elif name == "renew":
                want = model.renew(worker, token, ttl, now)
                assert await store.renew([lease], ttl) == [want]
            elif name == "release":
                want = model.release(worker, token, to, ttl, now)
                assert await store.release(lease, to=to, hold_ms=ttl) == want
            elif name == "finish":
                want = model.finish(token)
                assert await store.finish(lease) == want
            elif name == "claim":
                want = model.claim(ttl, now)
                assert await store.claim("s", ttl) == want
            elif name == "claim_dead":  # (the lease of ``worker`` at ``token`` named dead)
                want = model.claim(ttl, now, (worker, token))
                assert await store.claim("s", ttl, (worker, token)) == want
            else:
                want = model.allows(token)
                try:
                    await store.append_output(lease, [b"x"])
                    got_write = True
                except Fenced:
                    got_write = False
                assert got_write == want
            owner, token_now, _ = await store.lease_of("s")
            assert (owner, token_now) == (model.owner, model.token)
    finally:
        await store.close()
