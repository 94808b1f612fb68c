"""``rspp serve``: the ASGI app that lets people (and phones, and programs) call.

One process serves many concurrent calls sharing the loaded models:

``GET /``                  the browser page (``rspp/transports/web``)
``WS  /v1/call``           the call protocol (``docs/protocol.md``)
``GET /v1/pipelines``      the pipelines offered (the first is the default), each one's
                           sample rate (send and ask for it: nothing is resampled) and lead
``POST /v1/tokens``        a short-lived call token (``Authorization: Bearer RSPP_TOKEN``)
``POST /twilio/voice``, ``WS /twilio/stream``   Twilio Media Streams (when configured)
``GET /healthz``           alive; ``GET /readyz``: 200 only once the models are loaded
``GET /metrics``           Prometheus

The app talks to sessions only through a :class:`~rspp.transports.port.SessionHost`
(in this process, :class:`~rspp.transports.port.LocalHost`), so the same app
runs as a cluster's gateway in front of remote workers. Its lifespan owns every
call's task and the model loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from rspp.kernel import PipelineSpec
from rspp.transports.auth import Auth
from rspp.transports.call.calls import CallRegistry
from rspp.transports.call.endpoint import CallEndpoint, EndpointConfig
from rspp.transports.metrics import ServerMetrics
from rspp.transports.port import LocalHost, SessionHost

__all__ = ["ExtraRoutes", "ServerConfig", "create_app", "with_lead"]

log = logging.getLogger("rspp.serve")

WEB_DIR = Path(str(files("rspp.transports") / "web"))


#: More routes for the app (the Twilio endpoint), made from the host and the metrics.
ExtraRoutes = Callable[[SessionHost, ServerMetrics], Sequence[BaseRoute]]


@dataclass
class ServerConfig:
    """Everything ``rspp serve`` can be told."""

    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    resume_window_s: float = 30.0
    #: After loading, move everything loaded out of the GC's full passes (``gc.freeze``):
    #: for a server process (``rspp serve``), not for a test run that makes many apps.
    freeze_gc: bool = False
    #: Extra routes (the Twilio endpoint) given the host.
    extra_routes: ExtraRoutes | None = None


def with_lead(spec: PipelineSpec, lead_ms: float) -> PipelineSpec:
    """``spec`` with its audio output sending ``lead_ms`` ahead of real time (unless it says)."""
    nodes = [
        msgspec.structs.replace(node, config={"lead_ms": lead_ms, **node.config})
        if node.type == "audio_output"
        else node
        for node in spec.nodes
    ]
    return msgspec.structs.replace(spec, nodes=nodes)


def create_app(
    host: SessionHost,
    *,
    auth: Auth | None = None,
    config: ServerConfig | None = None,
    metrics: ServerMetrics | None = None,
    status: Callable[[str], None] = lambda _: None,
) -> Starlette:
    """The server's ASGI app. A :class:`LocalHost` is loaded by the app's lifespan."""
    auth = auth or Auth.from_env()
    config = config or ServerConfig()
    metrics = metrics or ServerMetrics()
    registry = CallRegistry(host, auth, metrics, window_s=config.resume_window_s)
    endpoint = CallEndpoint(registry, config.endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A host whose sessions run elsewhere owns its own tasks (a cluster's gateway).
        running = getattr(host, "running", None)
        async with contextlib.AsyncExitStack() as stack:
            if running is not None:
                await stack.enter_async_context(running())
            async with asyncio.TaskGroup() as group:
                registry.bind(group)
                background = []
                if isinstance(host, LocalHost) and not host.ready:
                    background.append(
                        group.create_task(_load(host, status, freeze=config.freeze_gc))
                    )
                watch = getattr(host, "watch", None)
                if watch is not None:
                    background.append(group.create_task(watch()))
                try:
                    yield
                finally:
                    for task in background:
                        task.cancel()
                    if isinstance(host, LocalHost):
                        await host.close()
                    leave = getattr(host, "leave", None)
                    if leave is not None:
                        leave()  # the calls go on elsewhere: their clients reconnect

    async def page(request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def pipelines(request: Request) -> Response:
        return JSONResponse({"pipelines": list(host.pipelines), "info": host.describe()})

    async def tokens(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not auth.static_token or not auth.check(header.removeprefix("Bearer ").strip()):
            return JSONResponse({"error": "a valid RSPP_TOKEN is needed"}, status_code=401)
        try:
            ttl = float(request.query_params.get("ttl", "600"))
        except ValueError:
            return JSONResponse({"error": "ttl must be a number of seconds"}, status_code=400)
        ttl = min(max(ttl, 1.0), 24 * 3600.0)
        return JSONResponse({"token": auth.issue(ttl), "expires_in": ttl})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if host.ready:
            return PlainTextResponse("ready")
        return PlainTextResponse("loading", status_code=503)

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    routes: list[BaseRoute] = [
        Route("/", page),
        Route("/v1/pipelines", pipelines),
        Route("/v1/tokens", tokens, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_page),
        WebSocketRoute("/v1/call", endpoint.handle),
        Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
    ]
    if config.extra_routes is not None:
        routes.extend(config.extra_routes(host, metrics))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.registry = registry
    app.state.auth = auth
    app.state.metrics = metrics
    return app


#: The collector's first threshold in a server (see ``_load``).
GC_YOUNG_THRESHOLD = 50_000


async def _load(host: LocalHost, status: Callable[[str], None], *, freeze: bool) -> None:
    await host.load(status)
    if freeze:
        # What is loaded now (models, modules) lives as long as the server: keep it out
        # of the collector's full passes, which otherwise walk it all and stall every call.
        gc.freeze()
        # A young collection every 700 *net* new objects (the default) catches, under
        # load, thousands of a frame's short-lived coroutines, handles and contexts in
        # flight and promotes them; the promotions then set off a full pass (tens of ms
        # at hundreds of calls: every call's loop stalls) about once a second. In steady
        # state the number of live objects hardly grows, so with a large first
        # threshold young passes come only as calls are added (BENCHMARKS.md, transport).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
