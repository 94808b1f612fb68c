"""The worker's ``POST /drain`` (``rspp.cli.cluster._worker_app``), and the worker pods'
preStop hook that calls it, run as the kubelet would run it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from rspp.cli.cluster import _worker_app
from tests.deploy.manifests import container, deployment, render


@dataclass
class _Config:
    drain_deadline_s: float = 2.0


@dataclass
class FakeWorker:
    """What the app reads of a :class:`rspp.cluster.worker.Worker`; its sessions leave
    ``handover_s`` after a drain starts (None: never)."""

    handover_s: float | None = 0.3
    ready: bool = True
    store_ok: bool = True
    draining: bool = False
    sessions: dict[str, Any] = field(default_factory=lambda: {"s1": object(), "s2": object()})
    config: _Config = field(default_factory=_Config)
    drains: int = 0

    def drain(self) -> None:
        self.drains += 1
        self.draining = True
        if self.handover_s is not None:
            asyncio.get_running_loop().call_later(self.handover_s, self.sessions.clear)


def _client(worker: FakeWorker, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_worker_app(worker), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://worker")


def test_drain_waits_until_the_worker_owns_no_session() -> None:
    async def main() -> None:
        worker = FakeWorker(handover_s=0.3)
        async with _client(worker) as client:
            started = time.monotonic()
            response = await client.post("/drain?wait=1")
            waited = time.monotonic() - started
            assert response.status_code == 200
            assert response.json() == {"draining": True, "sessions": 0}
            assert 0.25 <= waited < 1.5
            assert worker.drains == 1
            assert (await client.get("/readyz")).status_code == 503  # out of the placements

    asyncio.run(main())


def test_drain_without_wait_starts_it_and_answers_at_once() -> None:
    async def main() -> None:
        worker = FakeWorker(handover_s=5.0)
        async with _client(worker) as client:
            response = await client.post("/drain")
            assert response.status_code == 202
            assert response.json() == {"draining": True, "sessions": 2}
            assert worker.draining

    asyncio.run(main())


def test_a_second_drain_does_not_hurry_the_first() -> None:
    """Worker.drain() twice hands every session over at once: the endpoint calls it once."""

    async def main() -> None:
        worker = FakeWorker(handover_s=None)
        async with _client(worker) as client:
            await client.post("/drain")
            await client.post("/drain")
            assert worker.drains == 1

    asyncio.run(main())


def test_drain_gives_up_at_the_workers_own_deadline() -> None:
    async def main() -> None:
        worker = FakeWorker(handover_s=None, config=_Config(drain_deadline_s=0.2))
        async with _client(worker) as client:
            started = time.monotonic()
            response = await client.post("/drain?wait=1")
            assert response.status_code == 202
            assert response.json()["sessions"] == 2
            assert time.monotonic() - started < 3.0  # the deadline plus a second, not forever

    asyncio.run(main())


def test_drain_of_a_loading_worker_waits_for_it_to_run() -> None:
    async def main() -> None:
        worker = FakeWorker(ready=False, handover_s=0.0)
        async with _client(worker) as client:
            assert (await client.post("/drain")).status_code == 503  # nothing to drain yet

            async def loaded() -> None:
                await asyncio.sleep(0.2)
                worker.ready = True

            task = asyncio.create_task(loaded())
            response = await client.post("/drain?wait=1")
            await task
            assert response.status_code == 200
            assert worker.drains == 1

    asyncio.run(main())


@pytest.mark.parametrize("host", ["10.1.2.3", "testclient"])
def test_only_the_pod_itself_may_drain_it(host: str) -> None:
    async def main() -> None:
        worker = FakeWorker()
        async with _client(worker, host=host) as client:
            assert (await client.post("/drain")).status_code == 403
            assert (await client.get("/readyz")).status_code == 200  # still placed on
        assert worker.drains == 0 and not worker.draining

    asyncio.run(main())


# -- the preStop hook, for real ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[FakeWorker, int]]:
    """A fake worker's app served by uvicorn on a loopback port, in a thread."""
    import uvicorn

    worker = FakeWorker(handover_s=0.5)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(_worker_app(worker), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield worker, port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _pre_stop(overlay: str) -> list[str]:
    hook = container(deployment(render(overlay), "worker"))["lifecycle"]["preStop"]["exec"]
    command = list(hook["command"])
    assert command[0] == "python"  # the image's venv python
    return [sys.executable, *command[1:]]


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_the_pre_stop_hook_drains_the_worker_and_waits(
    overlay: str, served: tuple[FakeWorker, int]
) -> None:
    worker, port = served
    started = time.monotonic()
    done = subprocess.run(
        _pre_stop(overlay), env={"RSPP_HTTP_PORT": str(port)}, timeout=30, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 0.45  # it waited for the sessions to leave
    assert worker.drains == 1 and not worker.sessions


def test_the_pre_stop_hook_of_a_worker_already_gone_succeeds() -> None:
    port = _free_port()  # nothing listens there
    done = subprocess.run(
        _pre_stop("local"), env={"RSPP_HTTP_PORT": str(port)}, timeout=30, capture_output=True
    )
    assert done.returncode == 0, done.stderr
