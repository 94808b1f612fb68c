"""The dispatcher's admin endpoint (authenticated) and the worker's health and metrics."""

from __future__ import annotations

import asyncio
import os
from unittest import mock

import httpx

from rspp.cli.cluster import _admin_app, _worker_app
from rspp.client import Call, Caller
from rspp.cluster import MemoryStore
from rspp.cluster.dispatcher import Dispatcher
from rspp.testing.server import serving

from .inprocess import TOKEN, cluster
from .test_cluster_calls import FMT, SCRIPT, line, mid_reply, replies_heard_once, run


def test_a_move_through_the_admin_endpoint_needs_the_admin_token() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            with mock.patch.dict(os.environ, {"RSPP_ADMIN_TOKEN": "sesame"}):
                admin = _admin_app(Dispatcher(c.store))
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 1, heard_ms=100.0)
            source = c.owner_of(call.session)
            target = next(name for name in c.workers if name != source.id)
            async with serving(admin, direct=False) as address, httpx.AsyncClient() as http:
                url = f"http://{address}/v1/sessions/{call.session}/move"
                refused = await http.post(url, params={"to": target})
                assert refused.status_code == 401
                wrong = await http.post(url, headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401
                moved = await http.post(
                    url, params={"to": target}, headers={"Authorization": "Bearer sesame"}
                )
                assert moved.status_code == 202, moved.text
                assert moved.json()["from"] == source.id
                unknown = await http.post(
                    f"http://{address}/v1/sessions/nope/move",
                    headers={"Authorization": "Bearer sesame"},
                )
                assert unknown.status_code == 409 and "no owner" in unknown.json()["error"]
            await caller
            replies_heard_once(call, SCRIPT)
            assert c.owner_of(call.session).id == target

    run(body)


def test_a_worker_is_ready_only_when_loaded_reachable_and_not_draining() -> None:
    async def body() -> None:
        async with cluster(MemoryStore(), SCRIPT, workers=1) as c:
            worker = c.workers["w1"]
            async with (
                serving(_worker_app(worker), direct=False) as address,
                httpx.AsyncClient(base_url=f"http://{address}") as http,
            ):
                assert (await http.get("/readyz")).status_code == 200
                metrics = (await http.get("/metrics")).text
                for name in (
                    "rspp_worker_sessions",
                    "rspp_lease_renewals_total",
                    "rspp_takeovers_total",
                    "rspp_store_latency_ms_bucket",
                ):
                    assert name in metrics
                worker.drain()
                drained = await http.get("/readyz")
                assert drained.status_code == 503 and drained.text == "draining"
                assert (await http.get("/healthz")).status_code == 200

    run(body)
