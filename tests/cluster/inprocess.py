"""A whole cluster in this process, on the in-memory store (or a real Redis).

Gateway (the ``rspp serve`` app on a :class:`~rspp.cluster.gateway.ClusterHost`,
on a real loopback socket), dispatchers and workers as tasks of one event
loop, running the fake demo pipeline. Workers can be stopped (a crash, as far
as their sessions and the store know) or drained; their names are w1, w2...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from rspp.cluster import SessionStore
from rspp.cluster.dispatcher import Dispatcher, DispatcherConfig
from rspp.cluster.gateway import ClusterHost
from rspp.cluster.worker import Worker, WorkerConfig
from rspp.demo import DemoLine, demo_pipeline
from rspp.kernel import build
from rspp.testing.server import serving
from rspp.transports.auth import Auth
from rspp.transports.server import create_app, with_lead

TOKEN = "t"


@dataclass
class Cluster:
    store: SessionStore
    url: str
    app: Any
    host: ClusterHost
    workers: dict[str, Worker] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def owner_of(self, sid: str) -> Worker:
        (worker,) = [w for w in self.workers.values() if sid in w.sessions]
        return worker

    async def crash(self, name: str) -> None:
        """Stop worker ``name`` at once: no hand-over, no goodbye, leases left to lapse."""
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def cluster(
    store: SessionStore,
    script: list[DemoLine],
    *,
    workers: int = 2,
    dispatchers: int = 1,
    lead_ms: float = 60.0,
    worker_config: dict[str, Any] | None = None,
    configs: dict[str, dict[str, Any]] | None = None,
    more: dict[str, list[DemoLine]] | None = None,
) -> AsyncIterator[Cluster]:
    """``configs``: per worker name, its own WorkerConfig fields; ``more``: other
    pipelines the workers run (name -> script), for swaps."""
    pipeline = build(with_lead(demo_pipeline(script).spec, lead_ms))
    pipelines = {"demo": pipeline}
    for name, other in (more or {}).items():
        spec = msgspec.structs.replace(demo_pipeline(other).spec, name=name)
        pipelines[name] = build(with_lead(spec, lead_ms))
    host = ClusterHost(store, {"demo": pipeline.spec})
    app = create_app(host, auth=Auth(static_token=TOKEN))
    async with asyncio.TaskGroup() as tg:
        loops = [
            tg.create_task(Dispatcher(store, DispatcherConfig(id=f"d{n + 1}")).run())
            for n in range(dispatchers)
        ]
        found: dict[str, Worker] = {}
        tasks: dict[str, asyncio.Task[None]] = {}
        for n in range(workers):
            name = f"w{n + 1}"
            options = {**(worker_config or {}), **(configs or {}).get(name, {})}
            worker = Worker(store, pipelines, WorkerConfig(id=name, **options))
            found[name] = worker
            tasks[name] = tg.create_task(worker.run(load=False))
        try:
            async with serving(app) as address:
                while not await host.check():  # noqa: ASYNC110 (polls the store)
                    await asyncio.sleep(0.01)
                yield Cluster(store, f"ws://{address}/v1/call", app, host, found, tasks)
        finally:
            for task in [*loops, *tasks.values()]:
                task.cancel()
