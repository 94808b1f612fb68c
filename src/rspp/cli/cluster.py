"""The cluster's commands: ``rspp gateway | worker | dispatcher | cluster | sessions``.

``rspp worker``      run sessions (``--capacity``), owned by lease; SIGTERM drains
``rspp dispatcher``  place sessions on workers, replace dead ones; an admin endpoint
``rspp gateway``     the call server (browser page, WebSocket, Twilio) in front of workers
``rspp cluster``     all of them on this machine, with a private Redis unless given one
``rspp sessions move ID [--to W]``   hand a live session over to another worker
``rspp sessions swap ID --pipeline P | --set llm.KEY=VALUE``   switch it at a turn boundary

Every role finds the store at ``--redis`` (default ``RSPP_REDIS_URL``, then
``redis://127.0.0.1:6379/0``); a password and ACL user come from
``RSPP_REDIS_PASSWORD`` / ``RSPP_REDIS_USERNAME`` (or the URL; ``rediss://``
for TLS) and are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from rspp.cli.serve import (
    add_logging_args,
    add_pipeline_args,
    add_server_args,
    add_trace_arg,
    configure_observability,
    load_pipelines,
    run_server,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from rspp.cluster.redis_store import RedisStore
    from rspp.cluster.store import SessionStore

__all__ = ["add_parsers"]

log = logging.getLogger("rspp.cluster")

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run sessions for a cluster (SIGTERM drains)")
    add_pipeline_args(worker)
    _store_arg(worker)
    add_trace_arg(worker)
    worker.add_argument("--id", help="this worker's name (default: host-pid-random)")
    worker.add_argument("--capacity", type=int, default=50, help="sessions at most")
    worker.add_argument("--lease-ttl-ms", type=int, default=600, help="a lease's time to live")
    worker.add_argument(
        "--drain-deadline",
        type=float,
        default=float(os.environ.get("RSPP_DRAIN_DEADLINE_S", "25")),
        help="seconds a drain may take (the pod's grace period less a margin)",
    )
    worker.add_argument("--http-port", type=int, default=0, help="health and metrics (0: none)")
    worker.set_defaults(func=_worker)

    dispatcher = sub.add_parser("dispatcher", help="place a cluster's sessions on its workers")
    _store_arg(dispatcher)
    dispatcher.add_argument("--id", help="this dispatcher's name")
    dispatcher.add_argument(
        "--lease-ttl-ms", type=int, default=600, help="the workers' lease time to live"
    )
    dispatcher.add_argument(
        "--admin-port", type=int, default=0, help="admin HTTP endpoint and metrics (0: none)"
    )
    dispatcher.set_defaults(func=_dispatcher)

    gateway = sub.add_parser("gateway", help="serve calls in front of a cluster's workers")
    add_pipeline_args(gateway)
    _store_arg(gateway)
    add_server_args(gateway)
    gateway.set_defaults(func=_gateway)

    cluster = sub.add_parser(
        "cluster", help="a local cluster: Redis, gateway, dispatchers, workers"
    )
    add_pipeline_args(cluster)
    add_logging_args(cluster)
    add_trace_arg(cluster)
    cluster.add_argument("--redis", help="a Redis to use (default: start a private one)")
    cluster.add_argument("--workers", type=int, default=3, help="worker processes")
    cluster.add_argument("--dispatchers", type=int, default=2, help="dispatcher processes")
    cluster.add_argument("--capacity", type=int, default=50, help="sessions per worker")
    cluster.add_argument("--host", default="127.0.0.1", help="the gateway's address")
    cluster.add_argument("--port", type=int, default=8000, help="the gateway's port")
    cluster.set_defaults(func=_cluster)

    sessions = sub.add_parser("sessions", help="a cluster's live sessions")
    actions = sessions.add_subparsers(dest="action", required=True)
    move = actions.add_parser("move", help="hand a live session over to another worker")
    move.add_argument("session")
    move.add_argument("--to", default="", help="the worker to move it to (default: any)")
    _store_arg(move)
    move.add_argument(
        "--dispatcher", help="a dispatcher's admin URL instead of the store (RSPP_ADMIN_TOKEN)"
    )
    move.set_defaults(func=_move)
    swap = actions.add_parser(
        "swap", help="switch a live session to another pipeline, or reconfigure its nodes"
    )
    swap.add_argument("session")
    swap.add_argument("--pipeline", default="", help="a pipeline the workers offer")
    swap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.KEY=JSON",
        help="change a node's setting (e.g. llm.model='\"gemma\"'; repeatable)",
    )
    _store_arg(swap)
    swap.set_defaults(func=_swap)
    workers = actions.add_parser("workers", help="the live workers and their load")
    _store_arg(workers)
    workers.set_defaults(func=_workers)


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        default=os.environ.get("RSPP_REDIS_URL", DEFAULT_REDIS),
        help="the store (default: RSPP_REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    add_logging_args(parser)


def _logging(args: argparse.Namespace, role: str) -> None:
    configure_observability(args, role)  # and traces, for a worker asked to (--trace)


def _store(url: str) -> RedisStore:
    from rspp.cluster.redis_store import RedisStore

    return RedisStore(url)


# -- rspp worker ------------------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    _logging(args, "worker")
    pipelines = load_pipelines(args, "worker")
    if pipelines is None:
        return 2
    from rspp.cluster.worker import Worker, WorkerConfig

    config = WorkerConfig(
        capacity=args.capacity,
        lease_ttl_ms=args.lease_ttl_ms,
        renew_every_ms=max(50, args.lease_ttl_ms // 4),
        drain_deadline_s=args.drain_deadline,
    )
    if args.id:
        config.id = args.id

    async def main() -> None:
        store = _store(args.redis)
        worker = Worker(store, pipelines, config)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.drain)
        loop.add_signal_handler(signal.SIGINT, worker.drain)
        log.info("worker %s: store %s, pipelines %s", worker.id, store.url, ", ".join(pipelines))
        try:
            async with asyncio.TaskGroup() as tg:
                http = None
                if args.http_port:
                    http = tg.create_task(_http(_worker_app(worker), args.http_port))
                await worker.run()
                if http is not None:
                    http.cancel()
        finally:
            await store.close()

    asyncio.run(main())
    return 0


def _worker_app(worker: Any) -> Starlette:
    """Health, readiness, metrics, and ``POST /drain`` (from inside the pod only).

    ``POST /drain`` starts the drain that SIGTERM starts; with ``?wait=1`` it answers
    once the worker owns no session (200) or its drain deadline has passed (202, with
    the sessions left). A pod's preStop hook calls it, so the drain starts, and is
    waited for, before the kubelet's SIGTERM (``deploy/k8s``, ``docs/deploy.md``).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")  # alive: a busy worker is not a dead one

    async def readyz(request: Request) -> Response:
        if worker.ready and worker.store_ok and not worker.draining:
            return PlainTextResponse("ready")
        why = "draining" if worker.draining else "loading" if not worker.ready else "no store"
        return PlainTextResponse(why, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(worker.metrics.render(), media_type="text/plain; version=0.0.4")

    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

    async def polled(done: Callable[[], bool], until: float) -> None:
        # A poll: the worker has no event for either condition.
        while not done() and time.monotonic() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def drain(request: Request) -> Response:
        # Only the pod itself (its preStop hook) may drain it: the port is also Prometheus's.
        if request.client is None or request.client.host not in loopback:
            return PlainTextResponse("only from inside the pod", status_code=403)
        wait = request.query_params.get("wait", "0") not in ("", "0")
        until = time.monotonic() + worker.config.drain_deadline_s + 1.0
        if wait:  # still loading its models: drain it once it runs
            await polled(lambda: bool(worker.ready), until)
        if not worker.ready:
            return JSONResponse({"draining": False, "sessions": 0}, status_code=503)
        if not worker.draining:
            worker.drain()  # once: a second drain() hands every session over at once
        if wait:
            await polled(lambda: not worker.sessions, until)
        left = len(worker.sessions)
        return JSONResponse({"draining": True, "sessions": left}, status_code=202 if left else 200)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/drain", drain, methods=["POST"]),
        ]
    )


async def _http(app: Starlette, port: int, host: str = "0.0.0.0") -> None:
    """Serve ``app`` in this loop, leaving the process's signals to the role."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # SIGTERM is the worker's: it drains

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    try:
        await server.serve()
    finally:
        server.should_exit = True


# -- rspp dispatcher --------------------------------------------------------------------------


def _dispatcher(args: argparse.Namespace) -> int:
    _logging(args, "dispatcher")
    from rspp.cluster.dispatcher import Dispatcher, DispatcherConfig

    config = DispatcherConfig(
        lease_ttl_ms=args.lease_ttl_ms, renew_every_ms=max(50, args.lease_ttl_ms // 4)
    )
    if args.id:
        config.id = args.id

    async def main() -> None:
        store = _store(args.redis)
        dispatcher = Dispatcher(store, config)
        log.info("dispatcher %s: store %s", dispatcher.id, store.url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(dispatcher.run())]
                if args.admin_port:
                    tasks.append(tg.create_task(_http(_admin_app(dispatcher), args.admin_port)))
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await store.close()

    asyncio.run(main())
    return 0


def _admin_app(dispatcher: Any) -> Starlette:
    """The dispatcher's admin endpoint: ``Authorization: Bearer RSPP_ADMIN_TOKEN``."""
    import hmac

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from rspp.cluster.dispatcher import MoveRefused, request_move

    admin_token = os.environ.get("RSPP_ADMIN_TOKEN", "")

    def allowed(request: Request) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return bool(admin_token) and hmac.compare_digest(given, admin_token)

    async def move(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"error": "a valid RSPP_ADMIN_TOKEN is needed"}, status_code=401)
        sid = request.path_params["session"]
        to = request.query_params.get("to", "")
        try:
            owner = await request_move(dispatcher.store, sid, to)
        except MoveRefused as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse({"session": sid, "from": owner, "to": to or "any"}, status_code=202)

    async def workers(request: Request) -> Response:
        if not allowed(request):
            return JSONResponse({"error": "a valid RSPP_ADMIN_TOKEN is needed"}, status_code=401)
        import msgspec

        found = await dispatcher.workers(fresh=True)
        return JSONResponse([msgspec.structs.asdict(w) for w in found])

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(request: Request) -> Response:
        return Response(dispatcher.metrics.render(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/v1/sessions/{session}/move", move, methods=["POST"]),
            Route("/v1/workers", workers),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ]
    )


# -- rspp gateway -----------------------------------------------------------------------------


def _gateway(args: argparse.Namespace) -> int:
    _logging(args, "gateway")
    pipelines = load_pipelines(args, "gateway")
    if pipelines is None:
        return 2
    from rspp.cluster.gateway import ClusterHost
    from rspp.transports.metrics import ServerMetrics

    host = ClusterHost(_store(args.redis), {name: p.spec for name, p in pipelines.items()})
    print(f"gateway: pipelines {', '.join(pipelines)}", flush=True)
    # One /metrics: the call server's and the cluster port's, in one registry.
    run_server(args, host, ServerMetrics(host.metrics.registry))
    return 0


# -- rspp sessions ----------------------------------------------------------------------------


def _move(args: argparse.Namespace) -> int:
    if args.dispatcher:
        import httpx

        response = httpx.post(
            f"{args.dispatcher.rstrip('/')}/v1/sessions/{args.session}/move",
            params={"to": args.to} if args.to else {},
            headers={"Authorization": f"Bearer {os.environ.get('RSPP_ADMIN_TOKEN', '')}"},
        )
        print(response.text)
        return 0 if response.status_code == 202 else 1
    from rspp.cluster.dispatcher import request_move

    owner = _ask_owner(args.redis, "move", lambda store: request_move(store, args.session, args.to))
    if owner:
        print(f"asked {owner} to hand {args.session} over to {args.to or 'any worker'}")
    return 0 if owner else 1


def _ask_owner(url: str, command: str, ask: Callable[[SessionStore], Awaitable[str]]) -> str:
    """Run one request to a session's owner; the owner asked, or "" (the reason printed)."""
    from rspp.cluster.dispatcher import MoveRefused

    async def main() -> str:
        store = _store(url)
        try:
            return await ask(store)
        except MoveRefused as exc:
            print(f"rspp sessions {command}: {exc}", file=sys.stderr)
            return ""
        finally:
            await store.close()

    return asyncio.run(main())


def _swap(args: argparse.Namespace) -> int:
    import json

    from rspp.cluster.dispatcher import request_swap

    config: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot:
            print(f"rspp sessions swap: --set wants NODE.KEY=VALUE, not {item!r}", file=sys.stderr)
            return 2
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare word: a string
        config.setdefault(node, {})[name] = parsed

    owner = _ask_owner(
        args.redis,
        "swap",
        lambda store: request_swap(store, args.session, args.pipeline, config),
    )
    if owner:
        print(f"asked {owner} to swap {args.session} at its next turn boundary")
    return 0 if owner else 1


def _workers(args: argparse.Namespace) -> int:
    async def main() -> None:
        store = _store(args.redis)
        try:
            for w in sorted(await store.workers(2000), key=lambda w: w.id):
                state = " draining" if w.draining else ""
                print(f"{w.id}  {w.active}/{w.capacity} sessions  cpu {w.cpu:.2f}{state}")
        finally:
            await store.close()

    asyncio.run(main())
    return 0


# -- rspp cluster -----------------------------------------------------------------------------


def _cluster(args: argparse.Namespace) -> int:
    """Start Redis (unless given), the dispatchers, the workers and a gateway; wait."""
    from rspp.cluster.local import ProcessCluster
    from rspp.cluster.redis_store import safe_url

    fake = ["--fake"] if args.fake else []
    logs = ["--log-level", args.log_level, "--log-format", args.log_format]
    cluster = ProcessCluster(
        [*args.specs, *fake, "--lead-ms", str(args.lead_ms), *logs], redis_url=args.redis
    )
    with cluster:
        for n in range(args.dispatchers):
            cluster.dispatcher(f"dispatcher-{n + 1}", *logs)
        workers = [f"worker-{n + 1}" for n in range(args.workers)]
        for name in workers:
            cluster.worker(name, "--trace", args.trace, capacity=args.capacity)
        cluster.gateway("gateway", port=args.port, host=args.host)
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(
            f"rspp cluster: redis {'(private) ' if cluster.redis else ''}"
            f"{safe_url(cluster.redis_url)}, {args.dispatchers} dispatchers,"
            f" {args.workers} workers; logs in {cluster.log_dir}",
            flush=True,
        )
        print("loading the models...", flush=True)
        cluster.wait_ready(*workers, "gateway", timeout_s=600)
        print(f"open http://{shown}:{args.port}/?token={cluster.token}", flush=True)
        print(f"admin: RSPP_ADMIN_TOKEN={cluster.env['RSPP_ADMIN_TOKEN']}", flush=True)
        _wait(list(cluster.procs.values()))
    return 0


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    stop = False

    def stopping(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    with contextlib.suppress(KeyboardInterrupt):
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.2)
