"""A private Redis server for the cluster tests, and both stores behind one fixture."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from rspp.cluster import MemoryStore, SessionStore
from rspp.cluster.redis_server import RedisServer

#: A test body given a fresh store (created in the test's own event loop).
StoreTest = Callable[[SessionStore], Awaitable[Any]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def with_store(request: pytest.FixtureRequest) -> Callable[[StoreTest], Any]:
    """Run ``body(store)`` in a new event loop, on an empty store of the parameter's kind."""
    kind = request.param
    url = request.getfixturevalue("redis_server").url if kind == "redis" else ""

    def run(body: StoreTest) -> Any:
        async def main() -> Any:
            if kind == "memory":
                return await body(MemoryStore())
            from rspp.cluster.redis_store import RedisStore

            store = RedisStore(url)
            await store.redis.flushdb()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(asyncio.wait_for(main(), 30))

    return run
