"""Transport benchmark: the call protocol over a real WebSocket, the server in its own process.

    python benchmarks/transport.py                 # full run (about 15 minutes)
    python benchmarks/transport.py --quick         # smoke run (under a minute)
    python benchmarks/transport.py --parts calls --levels 1,200,400 [--keep-going]
    python benchmarks/transport.py --profile 75    # where the server's CPU goes (py-spy)
    python benchmarks/transport.py --parts echo,bargein --server-mode both   # + the cluster

Processes and cores. The server is this script started again with ``--role
server`` (``create_app`` + uvicorn with ``rspp.transports.direct``'s options, as
``rspp serve`` runs it; ``--ws websockets-sansio``: the plain ASGI path), pinned
to core 0 with ``taskset -c 0``; the load generator (this
process) pins itself to core 1. A fresh server is started for each part and
each level of the ramp. The load generator is websockets' sans-I/O client
protocol on plain asyncio transports plus ``rspp.transports.call.wire`` -- no
task per call: one pacer wakes every millisecond and sends the 20 ms frames of
the calls whose slot it is (the calls are spread over 20 slots), so hundreds of
calls cost one core little. Both processes measure their own event-loop lag (a
task that sleeps 10 ms and records the overshoot); the server reports its lag,
its GC pauses, its CPU time (``time.process_time()``) and the time it was
runnable but waited for its core (``/proc/thread-self/schedstat``: someone
else's work on that core) over a measurement window on extra routes,
``GET /bench/reset`` (start) and ``GET /bench/stats`` (end). The machine is
shared: before each measurement the script waits (at most 30 s) for both cores
to be nearly idle.

(a) WebSocket path, per audio frame. An echo pipeline defined here: on the
first ``audio.in`` the node emits a ``turn.commit`` (a reply root, numbered by
the kernel) and then answers every ``audio.in`` with an ``audio.out`` of that
reply carrying the same PCM, bound to the sink ``client``. One client sends
20 ms frames paced at 20 ms, a frame counter in the first two samples, and
timestamps (``perf_counter_ns``) the send and the receipt of the echoed binary
frame: the round trip client -> server -> kernel -> server -> client. The same
pipeline in-process (``session.push`` -> sink, no socket, in the load
generator's process) is the baseline; the WebSocket path's added latency is
the round trip minus the baseline (difference of the percentiles). Two floors
are measured the same way, each in a server process of its own: a bare ASGI
WebSocket echo under the same uvicorn (``--role asgi-echo``) and a plain
asyncio TCP echo (``--role tcp-echo``, a raw client).

(b) Barge-in over the network. The fake demo pipeline (``rspp.demo``: energy
VAD, turn manager, fake ASR/LLM/TTS) with ``lead_ms`` 60 and a long scripted
reply. A client speaks (1.5 s of speech-like audio, then silence, its
microphone never stops), keeps a playout model (bot frames play at real time
from a local buffer; audio is "held" from its receipt until it has played) and,
200-1200 ms into the bot's reply, sends ``control.interrupt`` at ``t0``;
``t1`` is the receipt of ``control.clear_buffer``, when the client drops all it
holds. Measured: ``t1 - t0`` (interrupt -> client holding no bot audio), the
audio the playout model played between ``t0`` and ``t1``, the most audio the
client held while paced output was flowing (bound: ``lead_ms`` + one frame +
network jitter), and bot frames of the cleared reply received after the clear.
Several calls run the trials side by side.

(c) Concurrent calls per server process. The same fake pipeline (a short
reply), ``N`` calls at once, each a loop: speak (1.5 s of speech + silence),
wait for the reply to play out (``turn.done``), a 0.5 s pause, again; the
microphone streams 20 ms frames all the time, and the client reports playback
(``playback.position``) every 200 ms while a reply plays, as the browser page
does. Call phases are spread at random. V2V at the client: the send of the
last speech frame -> the receipt of the reply's first bot audio frame. After
a warm-up, a window: the server's lag p99 and CPU, the V2V p50 of the turns
whose speech ended in it. ``N`` passes when the server's lag p99 < 20 ms, the
V2V p50 is within +10 % of the one-call level's, and every turn was answered;
a level that fails is run once more (the machine is shared) before it counts.
The ramp stops at the first ``N`` that fails; ``calls_per_process`` is the
largest that passed, ``cpu_ms_per_call_s`` the server's CPU per call-second
there (CPU seconds / (calls x window seconds)).

The cluster in place of the server (``--server-mode cluster``, or ``both``: the
single-process server, then the cluster, for each of parts (a) and (b); part (c)
runs against the single-process server only). What the cluster's event path adds
to a frame and to a barge-in -- gateway -> Redis input log -> worker -> Redis
output stream -> gateway -- is the cluster's row minus the local one, percentile
by percentile. Per part: a private ``redis-server``
(``rspp.cluster.redis_server.RedisServer``, as ``rspp cluster`` runs it: an
append-only file with ``appendfsync always``), then this script as ``--role
cluster-worker`` (a :class:`~rspp.cluster.worker.Worker` running the part's
pipeline: this script, since the echo node type is defined here) and as
``--role cluster-gateway`` (the app of ``rspp gateway``: ``create_app`` on a
:class:`~rspp.cluster.gateway.ClusterHost`, uvicorn with
``rspp.transports.direct``'s options, the same ``/bench`` routes; a
:class:`~rspp.cluster.dispatcher.Dispatcher` runs as a task of the gateway's
loop). Cores (``--cluster-cores G,W,R``, default ``0,0,1``): gateway and worker
share the server's core 0, as the one process does in local mode; redis-server
-- a store on a host of its own in a deployment -- shares core 1 with the load
generator (both are idle while a frame is in the gateway or the worker: one
frame's path is sequential). The load generator connects to the gateway exactly
as to the server. The echo part also reports each cluster process's CPU per
frame (``/proc/PID/task/*/schedstat``), with and without the background it
shows over 2 s with no call (beats, lease renewals, the orphan scan).

``--profile N``: one level of ``N`` calls with py-spy sampling the server
(``--py-spy PATH``, or on ``PATH``; cProfile otherwise), the samples sorted by
layer and by stage of a call's path and scaled to ms of CPU per call-second.

The last line of output is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import msgspec
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from rspp.events import AudioIn, AudioOut, Event, TurnCommit
from rspp.kernel import Node, NodeConfig, Pipeline, PipelineSpec, build
from rspp.kernel.registry import default_registry
from rspp.testing.audio import silence, speech_like
from rspp.transports.call.wire import (
    AUDIO_HEADER,
    AUDIO_MAGIC,
    PROTOCOL_VERSION,
    AudioFormat,
    Hello,
    Ready,
    decode_audio_frame,
    encode_message,
)
from stats import percentile  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "transport-bench"
RATE = 16000
FRAME_MS = 20
FRAME_NS = FRAME_MS * 1_000_000
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
LEAD_MS = 60.0
SERVER_CORE, CLIENT_CORE = 0, 1
LAG_TICK_S = 0.010
LOOP = ["asyncio"]  # the server's event loop (--loop)
WS_IMPL = ["direct"]  # the server's uvicorn WebSocket implementation (--ws)

CALL_USER = "Weather in Paris tomorrow?"  # 4 words: the partials have them all by 1.5 s
CALL_REPLY = "It will be mild and cloudy, fourteen degrees."  # ~2.7 s of fake speech
BARGE_USER = "Tell me the forecast."
BARGE_REPLY = " ".join(
    [
        "This week starts mild and cloudy, with a light wind from the west and some sun",
        "in the afternoons. On Wednesday a front brings rain and cooler air, and the",
        "rest of the week stays changeable, with showers, bright spells and a breeze.",
    ]
    * 3
)  # ~40 s of fake speech: the bot is always talking when it is interrupted

# -------------------------------------------------------------------- the pipelines

registry = default_registry.copy()


@registry.register("bench.echo")
class Echo(Node[NodeConfig]):
    """Answers every ``audio.in`` with an ``audio.out`` of the same PCM, in one reply."""

    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)
    produces: ClassVar[tuple[str, ...]] = ("turn.commit", "audio.out")

    def __init__(self, config: NodeConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.reply = 0

    def on_event(self, event: Event) -> None:
        assert isinstance(event, AudioIn)
        if not self.reply:
            root = TurnCommit(text="echo")
            self.emit(root)
            self.reply = root.turn  # the kernel numbered it
        self.emit(AudioOut(pcm=event.pcm, sample_rate=event.sample_rate, turn=self.reply))


def echo_pipeline() -> Pipeline:
    spec = msgspec.convert(
        {
            "name": "echo",
            "input": ["audio.in"],
            "nodes": [
                {"name": "echo", "type": "bench.echo", "inputs": ["input"], "sink": "client"}
            ],
        },
        PipelineSpec,
    )
    return build(spec, registry)


def fake_pipeline(user: str, reply: str) -> Pipeline:
    """The demo pipeline (fake models, real time) answering ``user`` with ``reply``, forever."""
    from rspp.demo import DemoLine, demo_pipeline
    from rspp.transports.server import with_lead

    script = [DemoLine(user, reply)] * 5000  # the fake ASR hears the lines in order
    return build(with_lead(demo_pipeline(script).spec, LEAD_MS))


def pipeline_for(name: str) -> Pipeline:
    if name == "echo":
        return echo_pipeline()
    if name == "bargein":
        return fake_pipeline(BARGE_USER, BARGE_REPLY)
    if name == "calls":
        return fake_pipeline(CALL_USER, CALL_REPLY)
    raise ValueError(f"no pipeline {name!r}")


# -------------------------------------------------------------------- the server role


def run_delay_s() -> float:
    """Time this thread was ready to run but waited for a CPU (other processes had it)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopLag:
    """How late a task that sleeps 10 ms at a time wakes up (the event loop's lag).

    Also times the garbage collector's passes (a full collection stops the loop).
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_start))

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self.lags.append(time.perf_counter() - before - LAG_TICK_S)

    def summary(self) -> dict[str, float]:
        lags = self.lags or [0.0]
        return {
            "lag_ms_p50": statistics.median(lags) * 1000,
            "lag_ms_p99": percentile(lags, 0.99) * 1000,
            "lag_ms_max": max(lags) * 1000,
            "lag_ticks": len(self.lags),
            "gc_full_passes": sum(1 for g, _ in self.gc_pauses if g == 2),
            "gc_pause_ms_max": max((d for _, d in self.gc_pauses), default=0.0) * 1000,
            "gc_ms_total": sum(d for _, d in self.gc_pauses) * 1000,
            "gc_passes": len(self.gc_pauses),
            "gc_passes_over_10ms": sum(1 for _, d in self.gc_pauses if d > 0.010),
        }


def server_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """asyncio's loop (rspp serve's), or uvloop's with ``--loop uvloop`` (for comparison)."""
    if LOOP[0] != "uvloop":
        return None
    import uvloop  # not a dependency: pip install uvloop to compare

    return uvloop.new_event_loop


def gc_census() -> dict[str, Any]:
    """Objects the collector tracks (outside the frozen start-up heap), the commonest types."""
    objects = gc.get_objects()
    types = collections.Counter(type(o).__qualname__ for o in objects)
    return {"gc_tracked": len(objects), "gc_top": types.most_common(12)}


async def serve(
    port: int, name: str, profile: str | None, ws: str, redis_url: str | None = None
) -> None:
    """The call server: ``create_app`` on uvicorn, as ``rspp serve`` runs it.

    With ``redis_url`` it is a cluster's gateway instead (``rspp gateway``'s app: a
    :class:`~rspp.cluster.gateway.ClusterHost`, no pipeline here) with a dispatcher as a
    task of the same loop; it says READY once a worker beats in the store.
    """
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rspp.transports.auth import Auth
    from rspp.transports.call.endpoint import EndpointConfig
    from rspp.transports.direct import uvicorn_options
    from rspp.transports.port import LocalHost
    from rspp.transports.server import ServerConfig, create_app

    store: Any = None
    host: Any
    if redis_url is None:
        host = LocalHost({name: pipeline_for(name)}, max_sessions=100_000)
    else:
        from rspp.cluster.gateway import ClusterHost
        from rspp.cluster.redis_store import RedisStore

        store = RedisStore(redis_url)
        pipeline = pipeline_for(name)  # keyed by its own name, as rspp gateway/worker do
        host = ClusterHost(store, {pipeline.name: pipeline.spec})
    lag = LoopLag()
    window = {"cpu": time.process_time(), "wall": time.perf_counter(), "waited": run_delay_s()}
    profiler = cProfile.Profile() if profile else None

    async def reset(request: Request) -> JSONResponse:
        lag.lags.clear()
        lag.gc_pauses.clear()
        window.update(cpu=time.process_time(), wall=time.perf_counter(), waited=run_delay_s())
        if profiler is not None:
            profiler.enable()
        return JSONResponse({"ok": True})

    async def stats(request: Request) -> JSONResponse:
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        return JSONResponse(
            {
                "cpu_s": cpu - window["cpu"],
                "wall_s": wall - window["wall"],
                "waited_s": run_delay_s() - window["waited"],
                "active": host.active(),
                **lag.summary(),
                **gc_census(),
            }
        )

    def routes(*_: Any) -> list[Route]:
        return [Route("/bench/reset", reset), Route("/bench/stats", stats)]

    app = create_app(
        host,
        auth=Auth(static_token=TOKEN),
        config=ServerConfig(
            endpoint=EndpointConfig(lead_ms=LEAD_MS),
            resume_window_s=5.0,
            extra_routes=routes,
            freeze_gc=True,  # as rspp serve
        ),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **(uvicorn_options() if ws == "direct" else {"ws": ws}),  # rspp serve's: direct
            backlog=4096,
            timeout_graceful_shutdown=3,
        )
    )
    sampler = asyncio.create_task(lag.run())
    dispatcher: asyncio.Task[None] | None = None
    try:
        if store is not None:
            from rspp.cluster.dispatcher import Dispatcher, DispatcherConfig

            dispatcher = asyncio.create_task(
                Dispatcher(store, DispatcherConfig(id="bench-dispatcher")).run()
            )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.01)
        # A gateway lets calls in once a worker beats in the store (it polls: no event).
        while store is not None and not await host.check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        print("READY", flush=True)
        await task
    finally:
        for background in (sampler, dispatcher):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        if store is not None:
            await store.close()


async def serve_worker(name: str, redis_url: str) -> None:
    """A cluster worker (``rspp worker``'s :class:`~rspp.cluster.worker.Worker`) running the
    part's pipeline: this script, because the echo pipeline's node type is defined here.

    SIGTERM stops it at once (its sessions have ended by then: the calls said bye).
    """
    import signal

    from rspp.cluster.redis_store import RedisStore
    from rspp.cluster.worker import Worker, WorkerConfig

    store = RedisStore(redis_url)
    pipeline = pipeline_for(name)
    worker = Worker(store, {pipeline.name: pipeline}, WorkerConfig(id="bench-worker"))
    task = asyncio.create_task(worker.run())  # preloads the models, as rspp worker does
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        while not worker.ready:  # noqa: ASYNC110 - the worker offers no event for it
            await asyncio.sleep(0.01)
        print("READY", flush=True)  # the gateway waits for its first beat
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await store.close()


async def serve_floor(port: int, role: str) -> None:
    """The floors of the echo: a bare ASGI WebSocket echo under uvicorn, or a TCP echo."""
    loop = asyncio.get_running_loop()
    if role == "tcp-echo":

        class TcpEcho(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)

        server = await loop.create_server(TcpEcho, "127.0.0.1", port)
        print("READY", flush=True)
        async with server:
            await server.serve_forever()
        return

    import uvicorn

    ready = encode_message(
        Ready(
            session="floor",
            pipeline="floor",
            input=_FMT,
            output=_FMT,
            resume_token="",
            resume_window_s=0.0,
            lead_ms=0.0,
        )
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        pos = 0
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                pos += 1
                header = AUDIO_HEADER.pack(AUDIO_MAGIC, PROTOCOL_VERSION, 0, 1, 1, pos, 0)
                await send({"type": "websocket.send", "bytes": header + data})
            elif '"call.hello"' in message.get("text", ""):
                await send({"type": "websocket.send", "text": ready})

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server_ = uvicorn.Server(config)
    task = asyncio.create_task(server_.serve())
    while not server_.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    print("READY", flush=True)
    await task


class Server:
    """The server role (or one of the cluster's) in a process of its own, pinned to a core."""

    def __init__(
        self,
        pipeline: str,
        profile: str | None = None,
        role: str = "server",
        *,
        core: int = SERVER_CORE,
        extra: tuple[str, ...] = (),
    ) -> None:
        from rspp.testing.server import free_port

        self.port = free_port()
        cmd = [sys.executable, __file__, "--role", role, "--port", str(self.port)]
        cmd += ["--pipeline", pipeline, "--ws", WS_IMPL[0], "--loop", LOOP[0], *extra]
        if profile:
            cmd += ["--profile-out", profile]
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(core), *cmd], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.stop()
            raise RuntimeError(f"the {role} did not start: {line!r}")

    async def get(self, path: str) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: ``--cluster-cores``: the cores of the cluster's gateway (with its dispatcher), worker and
#: redis-server. Default: gateway and worker on the server's core (the one core the
#: single-process server has), redis-server on the load generator's, as a store on a host
#: of its own would be.
CLUSTER_CORES = {"gateway": SERVER_CORE, "worker": SERVER_CORE, "redis": CLIENT_CORE}


def process_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has used, all its threads (``schedstat``: ns, not ticks)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def pin_process(pid: int, core: int) -> None:
    """Pin every thread of process ``pid`` to ``core`` (redis-server starts its own threads)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), {core})


class ClusterServer:
    """The cluster in place of the server: the load generator sees the same port and routes.

    A private redis-server (``rspp.cluster.redis_server.RedisServer``, as ``rspp cluster``
    runs it: append-only file, ``appendfsync always``), one worker (``--role
    cluster-worker``) and one gateway with the dispatcher as a task of its loop (``--role
    cluster-gateway``), each pinned as :data:`CLUSTER_CORES` says. ``port`` is the
    gateway's; its ``/bench`` routes report the gateway's loop and CPU.
    """

    def __init__(self, pipeline: str) -> None:
        from rspp.cluster.redis_server import RedisServer

        self.redis = RedisServer()
        self.worker: Server | None = None
        self.gateway: Server | None = None
        try:
            self.redis.start()
            assert self.redis.proc is not None
            pin_process(self.redis.proc.pid, CLUSTER_CORES["redis"])
            url = ("--redis", self.redis.url)
            self.worker = Server(
                pipeline, role="cluster-worker", core=CLUSTER_CORES["worker"], extra=url
            )
            self.gateway = Server(
                pipeline, role="cluster-gateway", core=CLUSTER_CORES["gateway"], extra=url
            )
        except BaseException:
            self.stop()
            raise
        self.port = self.gateway.port

    def pids(self) -> dict[str, int]:
        assert self.gateway is not None and self.worker is not None
        assert self.redis.proc is not None
        return {
            "gateway": self.gateway.proc.pid,
            "worker": self.worker.proc.pid,
            "redis": self.redis.proc.pid,
        }

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by each of the cluster's processes."""
        return {name: process_cpu_s(pid) for name, pid in self.pids().items()}

    async def get(self, path: str) -> dict[str, Any]:
        assert self.gateway is not None
        return await self.gateway.get(path)

    def stop(self) -> None:
        """Gateway first (its calls end), then the worker, then redis-server; each for sure."""
        try:
            if self.gateway is not None:
                self.gateway.stop()
        finally:
            try:
                if self.worker is not None:
                    self.worker.stop()
            finally:
                self.redis.stop()


def start_server(pipeline: str, cluster: bool) -> Server | ClusterServer:
    """The single-process server, or the cluster in its place."""
    return ClusterServer(pipeline) if cluster else Server(pipeline)


# -------------------------------------------------------------------- the client end


class Peek(msgspec.Struct):
    """What a client needs of a text frame."""

    kind: str
    turn: int = 0


_PEEK = msgspec.json.Decoder(Peek)
_FMT = AudioFormat(sample_rate=RATE)
HELLO = encode_message(Hello(protocol=PROTOCOL_VERSION, token=TOKEN)).encode()  # 16 kHz mono
INTERRUPT = b'{"kind":"control.interrupt"}'
BYE = b'{"kind":"call.bye"}'


class Client(asyncio.Protocol):
    """One call's client end: websockets' sans-I/O protocol on an asyncio transport."""

    def __init__(self) -> None:
        self.ws = ClientProtocol(parse_uri("ws://127.0.0.1/v1/call"), max_size=None)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.errors: list[str] = []

    async def open(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, "127.0.0.1", port)
        await asyncio.wait_for(self.ready, 30)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if type(event) is Response:
                if event.status_code != 101:
                    self._fail(f"upgrade refused: {event.status_code}")
                    return
                ws.send_text(HELLO)
                continue
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            payload = event.data
            if opcode is Opcode.BINARY:
                self.audio(now, payload)  # type: ignore[arg-type]
            elif opcode is Opcode.TEXT:
                message = _PEEK.decode(payload)
                if message.kind == "call.ready":
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif message.kind == "error":
                    self.errors.append(bytes(payload).decode()[:200])
                else:
                    self.text(now, message)
            elif opcode is Opcode.CLOSE:
                self.closed = True
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    # the call
    def send_audio(self, pcm: bytes) -> None:
        if not self.closed and self.ws.state is State.OPEN:
            self.ws.send_binary(pcm)
            self._flush()

    def send_text(self, data: bytes) -> None:
        if not self.closed and self.ws.state is State.OPEN:
            self.ws.send_text(data)
            self._flush()

    def bye(self) -> None:
        self.send_text(BYE)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:
                transport.close()

    def _fail(self, why: str) -> None:
        self.errors.append(why)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        self.close()

    # what subclasses handle
    def audio(self, now_ns: int, data: bytes) -> None:
        pass

    def text(self, now_ns: int, message: Peek) -> None:
        pass


class Pacer:
    """Calls each client's ``tick()`` once per 20 ms frame; clients are spread over 20 slots.

    Its wake-ups' overshoot is the load generator's own event-loop lag.
    """

    SLOTS = FRAME_MS

    def __init__(self) -> None:
        self.slots: list[list[Talker]] = [[] for _ in range(self.SLOTS)]
        self.lags: list[float] = []
        self._count = 0

    def add(self, client: Talker) -> None:
        self.slots[self._count % self.SLOTS].append(client)
        self._count += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            k += 1
            due = start + k * 0.001
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            self.lags.append(now - due)
            now_ns = time.perf_counter_ns()
            for client in self.slots[k % self.SLOTS]:
                client.tick(now_ns)


SPEECH = speech_like(1500, sample_rate=RATE)
SPEECH_FRAMES = [SPEECH[i : i + FRAME_BYTES] for i in range(0, len(SPEECH), FRAME_BYTES)]
SILENCE = silence(FRAME_MS, sample_rate=RATE)
REPORT_EVERY = 10  # ticks: a playback report every 200 ms while a reply plays


class Talker(Client):
    """A caller that speaks, waits for the reply, and speaks again; its microphone never stops.

    Keeps a playout model of the bot's audio: frames play at real time from a
    local buffer, in order; ``play_end_ns`` is when what it holds will have played.
    """

    def __init__(self, *, first_speech_in_ms: float, pause_ms: float = 500.0) -> None:
        super().__init__()
        self.pause_ticks = round(pause_ms / FRAME_MS)
        self.wait_ticks = round(first_speech_in_ms / FRAME_MS)  # silence before speaking
        self.speaking = 0  # frames of the utterance sent (0: not speaking)
        self.speech_end_ns = 0  # the last speech frame's send time; 0: no reply awaited
        self.reply = 0  # the reply being played (its turn)
        self.last_reply = 0
        self.play_end_ns = 0
        self.received_ms = 0.0
        self.ticks = 0
        self.v2v: list[tuple[int, float]] = []  # (speech end, V2V ms)
        self.unanswered: list[int] = []  # speech ends whose reply never came
        self.timeout_ns = 15_000_000_000

    # the microphone, every 20 ms
    def tick(self, now_ns: int) -> None:
        if self.closed:
            return
        self.ticks += 1
        if self.speaking:
            self.send_audio(SPEECH_FRAMES[self.speaking - 1])
            if self.speaking == len(SPEECH_FRAMES):
                self.speaking = 0
                self.speech_end_ns = time.perf_counter_ns()
            else:
                self.speaking += 1
            return
        self.send_audio(SILENCE)
        if self.speech_end_ns and now_ns - self.speech_end_ns > self.timeout_ns:
            self.unanswered.append(self.speech_end_ns)
            self.speech_end_ns = 0
            self.wait_ticks = self.pause_ticks
        if self.reply and self.ticks % REPORT_EVERY == 0:
            self.report(now_ns)
        if self.wait_ticks:
            self.wait_ticks -= 1
            if not self.wait_ticks:
                self.speaking = 1

    def held_ms(self, now_ns: int) -> float:
        return max(0, self.play_end_ns - now_ns) / 1e6

    def report(self, now_ns: int) -> None:
        played = self.received_ms - self.held_ms(now_ns)
        self.send_text(
            b'{"kind":"playback.position","turn":%d,"played_ms":%.1f}' % (self.reply, played)
        )

    # the bot
    def audio(self, now_ns: int, data: bytes) -> None:
        _, _, _, turn, _, _, n = AUDIO_HEADER.unpack_from(data)
        if turn != self.reply:
            if turn <= self.last_reply:
                self.stale(turn)
                return
            self.start_reply(now_ns, turn)
        ms = (len(data) - AUDIO_HEADER.size - n) / (RATE * 2 / 1000)
        self.play_end_ns = max(self.play_end_ns, now_ns) + round(ms * 1e6)
        self.received_ms += ms
        self.played_frame(now_ns, ms)

    def start_reply(self, now_ns: int, turn: int) -> None:
        if self.speech_end_ns:
            self.v2v.append((self.speech_end_ns, (now_ns - self.speech_end_ns) / 1e6))
            self.speech_end_ns = 0
        self.last_reply = max(self.last_reply, self.reply)
        self.reply = turn
        self.received_ms = 0.0
        self.play_end_ns = 0

    def text(self, now_ns: int, message: Peek) -> None:
        if message.kind in ("turn.done", "turn.interrupted") and message.turn == self.reply:
            self.report(now_ns)
            self.end_reply()

    def end_reply(self) -> None:
        self.last_reply = self.reply
        self.reply = 0
        self.wait_ticks = self.pause_ticks

    def stale(self, turn: int) -> None:
        pass

    def played_frame(self, now_ns: int, ms: float) -> None:
        pass


class Interrupter(Talker):
    """A caller that talks over the bot: ``control.interrupt`` 200-1200 ms into each reply."""

    def __init__(self, *, trials: int, rng: random.Random, first_speech_in_ms: float) -> None:
        super().__init__(first_speech_in_ms=first_speech_in_ms, pause_ms=700.0)
        self.trials = trials
        self.rng = rng
        self.t0 = 0
        self.held_at_t0 = 0.0
        self.received_since_t0 = 0.0
        self.cleared: set[int] = set()
        self.results: list[dict[str, float]] = []
        self.held_max_ms = 0.0
        self.stale_frames = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start_reply(self, now_ns: int, turn: int) -> None:
        super().start_reply(now_ns, turn)
        delay = self.rng.uniform(0.2, 1.2)
        asyncio.get_running_loop().call_later(delay, self.interrupt, turn)

    def played_frame(self, now_ns: int, ms: float) -> None:
        if self.t0:
            self.received_since_t0 += ms
        else:
            self.held_max_ms = max(self.held_max_ms, self.held_ms(now_ns))

    def interrupt(self, turn: int) -> None:
        if self.closed or turn != self.reply or self.t0:
            return
        self.t0 = now = time.perf_counter_ns()
        self.held_at_t0 = self.held_ms(now)
        self.received_since_t0 = 0.0
        self.send_text(INTERRUPT)

    def text(self, now_ns: int, message: Peek) -> None:
        if message.kind == "control.clear_buffer" and self.t0 and message.turn >= self.reply:
            t1 = now_ns
            dropped = self.held_ms(t1)  # what the client drops now
            self.results.append(
                {
                    "silent_ms": (t1 - self.t0) / 1e6,
                    "played_after_ms": self.held_at_t0 + self.received_since_t0 - dropped,
                    "held_at_t0_ms": self.held_at_t0,
                    "dropped_ms": dropped,
                }
            )
            self.play_end_ns = t1  # holding nothing
            self.report(now_ns)
            self.t0 = 0
            self.end_reply()
            if len(self.results) >= self.trials and not self.done.done():
                self.done.set_result(None)
        elif message.kind == "turn.done" and message.turn == self.reply:
            self.errors.append(f"reply {message.turn} played out before the interrupt")
            super().text(now_ns, message)

    def stale(self, turn: int) -> None:
        self.stale_frames += 1


def pin_to(core: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {core})


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _cpu_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each core, from /proc/stat."""
    cores = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            fields = [int(x) for x in line.split()[1:]]
            idle = fields[3] + fields[4]
            cores.append((sum(fields) - idle, sum(fields)))
    return cores


QUIET_LIMIT_S = [30.0]  # 0 for --quick: a smoke run does not wait


async def quiet(busy_max: float = 0.25) -> float:
    """Wait (at most ``QUIET_LIMIT_S``) until no core is busier than ``busy_max`` (others' work).

    The machine is shared: a test run of someone else's on the server's core is
    time the server waits for its CPU (reported per level as ``waited``).
    Returns the seconds waited.
    """
    limit_s = QUIET_LIMIT_S[0]
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < limit_s:
            before = _cpu_busy()
            await asyncio.sleep(1.0)
            after = _cpu_busy()
            shares = [
                (b1 - b0) / max(1, t1 - t0)
                for (b0, t0), (b1, t1) in zip(before, after, strict=True)
            ]
            if max(shares, default=0.0) <= busy_max:
                break
    except OSError:
        pass
    return time.perf_counter() - started


def log(message: str) -> None:
    print(message, flush=True)


# -------------------------------------------------------------------- (a) the echo path


class EchoClient(Client):
    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, int] = {}
        self.rtts: dict[int, float] = {}

    def audio(self, now_ns: int, data: bytes) -> None:
        frame = decode_audio_frame(data)
        (counter,) = struct.unpack_from("<I", frame.pcm)
        self.rtts[counter] = (now_ns - self.sent[counter]) / 1e6


def counted_frame(i: int) -> bytes:
    return bytes(struct.pack("<I", i) + SILENCE[4:])


async def paced(frames: int, send: Callable[[int], None]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(frames):
        delay = start + i * FRAME_MS / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        send(i)


#: Seconds the cluster's processes are watched with no call, before the echo call: their
#: background work (worker beats and lease renewals, the dispatcher's orphan scan every
#: 50 ms, the gateway's readiness check), subtracted for the CPU a frame costs.
IDLE_S = 2.0


async def echo_ws(
    frames: int, discard: int, role: str, cluster: bool = False
) -> tuple[list[float], dict[str, float]]:
    """Round trips through a server of ``role`` (or the cluster); CPU per frame (us) of each
    RSPP process: ``server``, or the cluster's ``gateway``, ``worker`` and ``redis`` (each
    with and without its idle background, and that as a share of a core)."""
    await quiet()
    server: Server | ClusterServer = ClusterServer("echo") if cluster else Server("echo", role=role)
    try:
        client = EchoClient()
        await client.open(server.port)
        measured = cluster or role == "server"
        idle: dict[str, float] = {}
        if isinstance(server, ClusterServer):  # its background work (beats, scans, renewals)
            idle0, t0 = server.cpu_s(), time.perf_counter()
            await asyncio.sleep(IDLE_S)
            idle1, elapsed = server.cpu_s(), time.perf_counter() - t0
            idle = {name: (idle1[name] - idle0[name]) / elapsed for name in idle1}
        if measured:
            await server.get("/bench/reset")
        cpu0 = server.cpu_s() if isinstance(server, ClusterServer) else {}
        t0 = time.perf_counter()
        gc.collect()

        def send(i: int) -> None:
            client.sent[i] = time.perf_counter_ns()
            client.send_audio(counted_frame(i))

        await paced(frames, send)
        await asyncio.sleep(0.2)
        cpu_us: dict[str, float] = {}
        if isinstance(server, ClusterServer):
            cpu1, elapsed = server.cpu_s(), time.perf_counter() - t0
            for name in cpu1:
                used = cpu1[name] - cpu0[name]
                cpu_us[name] = used / frames * 1e6
                cpu_us[f"{name}_less_idle"] = (used - idle[name] * elapsed) / frames * 1e6
                cpu_us[f"{name}_idle_share"] = idle[name]
        elif measured:
            stats = await server.get("/bench/stats")
            cpu_us = {"server": stats["cpu_s"] / frames * 1e6}
        client.bye()
        await asyncio.sleep(0.1)
        client.close()
        lost = frames - len(client.rtts)
        if lost:
            log(f"  {'cluster' if cluster else role}: {lost} echoed frames did not come back")
        return [client.rtts[i] for i in sorted(client.rtts) if i >= discard], cpu_us
    finally:
        server.stop()


class TcpEchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.sent: dict[int, int] = {}
        self.rtts: dict[int, float] = {}
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        self.buffer += data
        while len(self.buffer) >= FRAME_BYTES:
            (counter,) = struct.unpack_from("<I", self.buffer)
            self.rtts[counter] = (now - self.sent[counter]) / 1e6
            self.buffer = self.buffer[FRAME_BYTES:]


async def echo_tcp(frames: int, discard: int) -> list[float]:
    await quiet()
    server = Server("echo", role="tcp-echo")
    try:
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_connection(TcpEchoClient, "127.0.0.1", server.port)
        gc.collect()

        def send(i: int) -> None:
            client.sent[i] = time.perf_counter_ns()
            transport.write(counted_frame(i))

        await paced(frames, send)
        await asyncio.sleep(0.2)
        transport.close()
        return [client.rtts[i] for i in sorted(client.rtts) if i >= discard]
    finally:
        server.stop()


async def echo_inprocess(frames: int, discard: int) -> list[float]:
    received: dict[int, int] = {}

    class Sink:
        def send(self, event: Event) -> None:
            now = time.perf_counter_ns()
            if type(event) is AudioOut:
                received[struct.unpack_from("<I", event.pcm)[0]] = now

    sent: dict[int, int] = {}
    await quiet()
    async with echo_pipeline().session("baseline", sinks={"client": Sink()}) as session:
        gc.collect()

        def send(i: int) -> None:
            sent[i] = time.perf_counter_ns()
            session.push(AudioIn(pcm=counted_frame(i), sample_rate=RATE))

        await paced(frames, send)
        await asyncio.sleep(0.1)
    return [(received[i] - sent[i]) / 1e6 for i in sorted(received) if i >= discard]


async def part_echo(frames: int) -> dict[str, Any]:
    discard = min(50, frames // 5)
    log(f"(a) echo: {frames} frames of 20 ms, paced, one call; load {loadavg()}")
    inproc = await echo_inprocess(frames, discard)
    rtts, cpu = await echo_ws(frames, discard, "server")
    cpu_us = cpu["server"]
    asgi, _ = await echo_ws(frames, discard, "asgi-echo")
    tcp = await echo_tcp(frames, discard)
    out: dict[str, Any] = {"frames": len(rtts)}
    for name, values in (
        ("ws_rtt", rtts),
        ("inproc", inproc),
        ("asgi_echo", asgi),
        ("tcp_echo", tcp),
    ):
        out[f"{name}_ms_p50"] = statistics.median(values)
        out[f"{name}_ms_p99"] = percentile(values, 0.99)
    out["ws_rtt_ms_p95"] = percentile(rtts, 0.95)
    out["ws_rtt_ms_max"] = max(rtts)
    out["ws_frame_overhead_ms_p50"] = out["ws_rtt_ms_p50"] - out["inproc_ms_p50"]
    out["ws_frame_overhead_ms_p99"] = out["ws_rtt_ms_p99"] - out["inproc_ms_p99"]
    out["ws_over_asgi_echo_ms_p50"] = out["ws_rtt_ms_p50"] - out["asgi_echo_ms_p50"]
    out["server_cpu_us_per_frame"] = cpu_us
    log(
        f"  RSPP round trip p50 {out['ws_rtt_ms_p50']:.3f} ms  p99 {out['ws_rtt_ms_p99']:.3f} ms"
        f"  (server CPU {cpu_us:.0f} us per frame);  in-process p50 "
        f"{out['inproc_ms_p50'] * 1000:.1f} us  p99 {out['inproc_ms_p99'] * 1000:.1f} us;  "
        f"added p50 {out['ws_frame_overhead_ms_p50']:.3f} ms  p99 "
        f"{out['ws_frame_overhead_ms_p99']:.3f} ms"
    )
    log(
        f"  floors: bare ASGI echo (uvicorn) p50 {out['asgi_echo_ms_p50']:.3f} ms  p99 "
        f"{out['asgi_echo_ms_p99']:.3f} ms;  TCP echo (asyncio) p50 {out['tcp_echo_ms_p50']:.3f}"
        f" ms  p99 {out['tcp_echo_ms_p99']:.3f} ms"
    )
    return out


async def part_echo_cluster(frames: int) -> dict[str, Any]:
    """The same echo call through the cluster: gateway -> redis -> worker -> redis -> gateway."""
    discard = min(50, frames // 5)
    log(
        f"(a') echo through the cluster: {frames} frames of 20 ms, paced, one call; "
        f"cores {CLUSTER_CORES}; load {loadavg()}"
    )
    rtts, cpu = await echo_ws(frames, discard, "server", cluster=True)
    out: dict[str, Any] = {"frames": len(rtts)}
    for q in (50, 95, 99):
        out[f"rtt_ms_p{q}"] = percentile(rtts, q / 100) if q != 50 else statistics.median(rtts)
    out["rtt_ms_max"] = max(rtts)
    for name, value in cpu.items():
        if name.endswith("_idle_share"):
            out[f"idle_cpu_share_{name.removesuffix('_idle_share')}"] = value
        else:
            out[f"cpu_us_per_frame_{name}"] = value
    roles = ("gateway", "worker", "redis")
    log(
        f"  cluster round trip p50 {out['rtt_ms_p50']:.3f} ms  p95 {out['rtt_ms_p95']:.3f} ms  "
        f"p99 {out['rtt_ms_p99']:.3f} ms  max {out['rtt_ms_max']:.3f} ms;  CPU per frame "
        "(less the idle background): "
        + ", ".join(f"{n} {cpu[n]:.0f} us ({cpu[f'{n}_less_idle']:.0f})" for n in roles)
        + ";  idle: "
        + ", ".join(f"{n} {cpu[f'{n}_idle_share']:.1%}" for n in roles)
    )
    return out


# -------------------------------------------------------------------- (b) barge-in


async def part_bargein(trials: int, calls: int, cluster: bool = False) -> dict[str, Any]:
    """Barge-in trials against the single-process server, or the cluster (``cluster``)."""
    where = f"the cluster (cores {CLUSTER_CORES})" if cluster else "the server"
    log(
        f"(b) barge-in through {where}: {trials} trials over {calls} calls, lead {LEAD_MS:g} ms;"
        f" load {loadavg()}"
    )
    await quiet()
    server = start_server("bargein", cluster)
    pacer = Pacer()
    pacing = asyncio.create_task(pacer.run())
    rng = random.Random(7)
    clients: list[Interrupter] = []
    try:
        per_call = -(-trials // calls)
        for i in range(calls):
            client = Interrupter(trials=per_call, rng=rng, first_speech_in_ms=100 + i * 700)
            await client.open(server.port)
            pacer.add(client)
            clients.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), 60 + per_call * 10)
    finally:
        for client in clients:
            client.bye()
        await asyncio.sleep(0.1)
        for client in clients:
            client.close()
        pacing.cancel()
        server.stop()
    results = [r for c in clients for r in c.results]
    silent = [r["silent_ms"] for r in results]
    played = [r["played_after_ms"] for r in results]
    held_max = max(c.held_max_ms for c in clients)
    out = {
        "trials": len(results),
        "ws_bargein_client_silent_ms_p50": statistics.median(silent),
        "ws_bargein_client_silent_ms_p95": percentile(silent, 0.95),
        "ws_bargein_client_silent_ms_p99": percentile(silent, 0.99),
        "ws_bargein_client_silent_ms_max": max(silent),
        "client_played_after_interrupt_ms_p50": statistics.median(played),
        "client_played_after_interrupt_ms_p95": percentile(played, 0.95),
        "client_played_after_interrupt_ms_p99": percentile(played, 0.99),
        "client_played_after_interrupt_ms_max": max(played),
        "client_held_ms_at_interrupt_p50": statistics.median(r["held_at_t0_ms"] for r in results),
        "client_held_ms_max": held_max,
        "client_held_bound_ms": LEAD_MS + FRAME_MS,
        "stale_frames_after_clear": sum(c.stale_frames for c in clients),
        "v2v_ms_p50": statistics.median(v for c in clients for _, v in c.v2v),
        "errors": [e for c in clients for e in c.errors][:5],
    }
    log(
        f"  interrupt -> client silent p50 {out['ws_bargein_client_silent_ms_p50']:.2f} ms  "
        f"p99 {out['ws_bargein_client_silent_ms_p99']:.2f} ms  max "
        f"{out['ws_bargein_client_silent_ms_max']:.2f} ms;  played after the interrupt p50 "
        f"{out['client_played_after_interrupt_ms_p50']:.2f} ms  max "
        f"{out['client_played_after_interrupt_ms_max']:.2f} ms;  held at most "
        f"{held_max:.1f} ms (bound {LEAD_MS + FRAME_MS:g} + jitter);  stale frames "
        f"{out['stale_frames_after_clear']}"
    )
    return out


# -------------------------------------------------------------------- (c) concurrent calls

LOOP_MS = 1500 + 1000 + 2700 + 500  # speech + V2V + reply + pause, about


async def run_level(
    n: int,
    warmup_s: float,
    window_s: float,
    profile: str | None = None,
    py_spy: tuple[str, str] | None = None,
) -> dict[str, Any]:
    waited_quiet = await quiet()
    server = Server("calls", profile)
    pacer = Pacer()
    pacing = asyncio.create_task(pacer.run())
    rng = random.Random(n)
    clients: list[Talker] = []
    refused = 0
    try:
        t_connect = time.perf_counter()
        for _ in range(n):
            client = Talker(first_speech_in_ms=rng.uniform(20, LOOP_MS))
            try:
                await client.open(server.port)
            except (ConnectionError, OSError, TimeoutError):
                refused += 1
                continue
            pacer.add(client)
            clients.append(client)
        connect_s = time.perf_counter() - t_connect
        await asyncio.sleep(warmup_s)
        await server.get("/bench/reset")
        pacer.lags.clear()
        cpu0, w0, waited0 = time.process_time(), time.perf_counter_ns(), run_delay_s()
        spy = None
        if py_spy is not None:  # sample the server for the window (py-spy runs on our core)
            exe, out = py_spy
            spy = await asyncio.create_subprocess_exec(
                *(exe, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", out),
                *("-d", str(int(window_s)), "--pid", str(server.proc.pid)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        await asyncio.sleep(window_s)
        if spy is not None:
            await spy.wait()
        w1 = time.perf_counter_ns()
        stats = await server.get("/bench/stats")
        client_cpu = time.process_time() - cpu0
        client_waited = run_delay_s() - waited0
        client_lags = list(pacer.lags)
    finally:
        for client in clients:
            client.bye()
        await asyncio.sleep(0.2)
        for client in clients:
            client.close()
        pacing.cancel()
        server.stop()
    v2v = [v for c in clients for t, v in c.v2v if w0 <= t <= w1]
    unanswered = sum(1 for c in clients for t in c.unanswered if w0 <= t <= w1)
    unanswered += sum(1 for c in clients if c.speech_end_ns and w0 <= c.speech_end_ns <= w1 - 5e9)
    errors = [e for c in clients for e in c.errors]
    return {
        "calls": n,
        "quiet_wait_s": round(waited_quiet, 1),
        "connected": len(clients),
        "refused": refused,
        "connect_s": round(connect_s, 2),
        "turns": len(v2v),
        "unanswered": unanswered,
        "errors": len(errors),
        "error_sample": errors[:3],
        "v2v_ms_p50": statistics.median(v2v) if v2v else float("nan"),
        "v2v_ms_p99": percentile(v2v, 0.99) if v2v else float("nan"),
        "server_lag_ms_p50": stats["lag_ms_p50"],
        "server_lag_ms_p99": stats["lag_ms_p99"],
        "server_lag_ms_max": stats["lag_ms_max"],
        "server_gc_pause_ms_max": stats["gc_pause_ms_max"],
        "server_gc_full_passes": stats["gc_full_passes"],
        "server_gc_tracked_per_call": stats["gc_tracked"] / n,
        "server_gc_passes": stats["gc_passes"],
        "server_gc_passes_over_10ms": stats["gc_passes_over_10ms"],
        "server_gc_ms_total": stats["gc_ms_total"],
        "server_gc_top": stats["gc_top"],
        "server_cpu_share": stats["cpu_s"] / stats["wall_s"],
        # the share of the window the server was ready to run but its core ran something else
        "server_waited_share": stats["waited_s"] / stats["wall_s"],
        "cpu_ms_per_call_s": stats["cpu_s"] / (n * stats["wall_s"]) * 1000,
        "client_lag_ms_p99": percentile(client_lags, 0.99) * 1000 if client_lags else 0.0,
        "client_cpu_share": client_cpu / window_s,
        "client_waited_share": client_waited / window_s,
    }


async def level_row(n: int, warmup_s: float, window_s: float, base: float | None) -> dict[str, Any]:
    """One level of the ramp, judged against the one-call V2V ``base``."""
    row = await run_level(n, warmup_s, window_s)
    row["v2v_vs_one_call"] = row["v2v_ms_p50"] / (base or row["v2v_ms_p50"])
    row["passed"] = bool(
        row["server_lag_ms_p99"] < 20.0
        and row["v2v_vs_one_call"] <= 1.10
        and row["unanswered"] == 0
        and row["refused"] == 0
        and row["turns"] > 0
    )
    log(
        f"  N={n:4d}: V2V p50 {row['v2v_ms_p50']:7.1f} ms ({row['v2v_vs_one_call']:.3f}x) "
        f"p99 {row['v2v_ms_p99']:7.1f};  server lag p99 {row['server_lag_ms_p99']:6.2f} ms "
        f"max {row['server_lag_ms_max']:6.1f};  server CPU {row['server_cpu_share']:.0%} "
        f"(waited {row['server_waited_share']:.0%}) = "
        f"{row['cpu_ms_per_call_s']:.3f} ms per call-s;  client lag p99 "
        f"{row['client_lag_ms_p99']:.1f} ms CPU {row['client_cpu_share']:.0%} "
        f"(waited {row['client_waited_share']:.0%});  GC pause max "
        f"{row['server_gc_pause_ms_max']:.0f} ms;  "
        f"{row['turns']} turns, {row['unanswered']} unanswered, {row['errors']} errors"
        f"  {'pass' if row['passed'] else 'FAIL'}"
    )
    return row


async def part_calls(
    levels: list[int], warmup_s: float, window_s: float, one_call_s: float, keep_going: bool
) -> dict[str, Any]:
    """The ramp; ``calls_per_process`` is the largest level before the first that fails.

    ``keep_going``: measure the levels after a failure too (until the server's core is
    saturated), for the cost curve.
    """
    log(f"(c) concurrent calls, levels {levels}, window {window_s:g} s; load {loadavg()}")
    rows: list[dict[str, Any]] = []
    base: float | None = None
    passed = 0
    failed = False
    for n in levels:
        row = await level_row(n, warmup_s, window_s if n > 1 else max(window_s, one_call_s), base)
        if base is None:
            base = row["v2v_ms_p50"]
            row["v2v_vs_one_call"] = 1.0
        if not row["passed"] and n > 1:  # a shared machine: one more try before calling it
            log(f"  N={n:4d}: FAIL; once more")
            retry = await level_row(n, warmup_s, window_s, base)
            retry["first_try"] = row
            row = retry
        rows.append(row)
        if row["passed"] and not failed:
            passed = n
        else:
            failed = True
            if not keep_going:
                break
        if row["server_cpu_share"] + row["server_waited_share"] > 0.95:
            break  # the server's core is saturated: no point in more calls
    best = next((r for r in rows if r["calls"] == passed), None)
    return {
        "levels": rows,
        "calls_per_process": passed,
        "cpu_ms_per_call_s": best["cpu_ms_per_call_s"] if best else None,
        "single_call_v2v_ms_p50": base,
    }


#: Where the server's time goes. A sample whose stack holds one of these anywhere is theirs
#: (the cost of what they call, system calls included) ...
ENCLOSING = [
    ("tone (", "fake TTS: tone() synthesis (numpy)"),
    ("resume_reading", "uvicorn: pause/resume_reading around every message (epoll_ctl)"),
    ("pause_reading", "uvicorn: pause/resume_reading around every message (epoll_ctl)"),
    ("LoopLag", "benchmark: the lag sampler"),
]
#: ... otherwise the first of these found, from the innermost frame out, names it.
CATEGORIES = [
    ("rspp/testing/", "fake ASR/LLM/TTS, the rest"),
    ("rspp/nodes/energy_vad", "energy VAD"),
    ("rspp/nodes/segmenter", "energy VAD"),
    ("rspp/nodes/turn_manager", "turn manager"),
    ("rspp/dialog/", "turn manager"),
    ("rspp/nodes/audio_output", "audio output node (pacing)"),
    ("rspp/nodes/", "other nodes (TTS text chunking)"),
    ("rspp/kernel/", "kernel (push, emission, routing, node tasks, timers)"),
    ("rspp/events/", "kernel (push, emission, routing, node tasks, timers)"),
    ("rspp/transports/port", "session port (LocalPort, visibility)"),
    ("rspp/transports/call/calls", "call + connection (output pump, send queue, writer)"),
    ("rspp/transports/call/server", "call protocol state machine + wire (sans-I/O)"),
    ("rspp/transports/call/wire", "call protocol state machine + wire (sans-I/O)"),
    ("rspp/transports/call/endpoint", "endpoint reader loop"),
    ("rspp/transports/audio", "resampling"),
    ("starlette/", "starlette WebSocket (receive/send wrappers)"),
    ("websockets/", "websockets framing (parse, serialize, mask)"),
    ("uvicorn/", "uvicorn ASGI WebSocket protocol"),
    ("selector_events", "asyncio socket transport (recv/send syscalls)"),
    ("selectors.py", "asyncio selector (epoll, register/unregister)"),
    ("asyncio/", "asyncio scheduling (loop, tasks, futures, queues)"),
]


#: The same samples by stage of the call's path: the first of these anywhere in the stack.
STAGES = [
    ("tone (", "fake TTS synthesis: tone() (numpy)"),
    ("LoopLag", "benchmark: the lag sampler"),
    ("resume_reading", "uvicorn: pause_reading/resume_reading around every message"),
    ("pause_reading", "uvicorn: pause_reading/resume_reading around every message"),
    ("Ingress.push", "in: session.push -> kernel -> inline nodes (VAD, fake ASR, turns)"),
    ("CallEndpoint._read", "in: endpoint reader (starlette/uvicorn receive, CallServer)"),
    ("_read_ready", "in: socket read + websockets parse (uvicorn data_received)"),
    ("AudioOutput.run", "out: audio output pacing -> emission -> sink -> port"),
    ("Call.run", "out: call output pump (port -> encode -> send queue)"),
    ("Connection.writer", "out: writer -> starlette -> uvicorn -> websockets -> socket"),
    ("TaskOwner._supervise", "fake LLM/TTS streams (kernel node tasks)"),
    ("Timers", "kernel timers (fake ASR finals, turn manager)"),
    # py-spy --nonblocking may lose the outer frames of a stack: its inner ones tell
    (
        "WebSocketsSansIOProtocol.send",
        "out: writer -> starlette -> uvicorn -> websockets -> socket",
    ),
    ("WebSocket.send", "out: writer -> starlette -> uvicorn -> websockets -> socket"),
    ("websockets/", "in: socket read + websockets parse (uvicorn data_received)"),
    ("rspp/nodes/audio_output", "out: audio output pacing -> emission -> sink -> port"),
    ("rspp/nodes/", "in: session.push -> kernel -> inline nodes (VAD, fake ASR, turns)"),
    ("rspp/testing/", "fake LLM/TTS streams (kernel node tasks)"),
    ("Queue.get", "in: endpoint reader (starlette/uvicorn receive, CallServer)"),
    ("WebSocket.receive", "in: endpoint reader (starlette/uvicorn receive, CallServer)"),
    ("rspp/transports/call/server", "in: endpoint reader (starlette/uvicorn receive, CallServer)"),
    (
        "rspp/transports/call/endpoint",
        "in: endpoint reader (starlette/uvicorn receive, CallServer)",
    ),
]


def categorize(raw: str, table: str = "layers") -> dict[str, float]:
    """Share of the samples of a py-spy ``raw`` (collapsed stacks) file per category.

    ``table``: "layers" (:data:`ENCLOSING`, then :data:`CATEGORIES`) or "stages"
    (:data:`STAGES`; the rest is the event loop's own work).
    """
    counts: dict[str, int] = {}
    total = 0
    for line in Path(raw).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        if table == "stages":
            name = next((c for p, c in STAGES if p in stack), "event loop (select, scheduling)")
            counts[name] = counts.get(name, 0) + int(n)
            total += int(n)
            continue
        name = next((c for pattern, c in ENCLOSING if pattern in stack), "other")
        for frame in reversed(frames if name == "other" else ()):
            found = next((c for pattern, c in CATEGORIES if pattern in frame), None)
            if found is not None:
                name = found
                break
        counts[name] = counts.get(name, 0) + int(n)
        total += int(n)
    return {name: c / total for name, c in sorted(counts.items(), key=lambda kv: -kv[1])}


async def part_profile(n: int, warmup_s: float, window_s: float, py_spy: str | None) -> None:
    """Where the server's CPU goes with ``n`` calls, per call-second.

    With py-spy (a sampling profiler: the server runs at full speed) the samples are
    sorted into :data:`CATEGORIES` and scaled to the CPU the server used in the same
    window; without it, cProfile's tables (the profiler slows the server down).
    """
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    if py_spy:
        raw = str(out / f"transport-server-{n}.pyspy.txt")
        log(f"sampling the server with py-spy, {n} calls, {window_s:g} s window -> {raw}")
        row = await run_level(n, warmup_s, window_s, py_spy=(py_spy, raw))
        cpu = row["cpu_ms_per_call_s"]
        log(
            f"  server CPU {row['server_cpu_share']:.0%} (waited {row['server_waited_share']:.0%})"
            f" = {cpu:.3f} ms per call-second; lag p99 {row['server_lag_ms_p99']:.1f} ms"
        )
        shares = categorize(raw)
        stages = categorize(raw, "stages")
        for title, table in (("by layer", shares), ("by stage", stages)):
            log(f"  {title}:")
            for name, share in table.items():
                log(f"  {share:6.1%}  {share * cpu:6.3f} ms/call-s  {name}")
        print(
            json.dumps({"calls": n, "cpu_ms_per_call_s": cpu, "layers": shares, "stages": stages})
        )
        return
    path = str(out / f"transport-server-{n}.prof")
    log(f"profiling the server with cProfile, {n} calls, {window_s:g} s window -> {path}")
    row = await run_level(n, warmup_s, window_s, profile=path)
    log(f"  (under cProfile) server CPU {row['server_cpu_share']:.0%}")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)


# -------------------------------------------------------------------- main

#: (local key, cluster key, added key): what the cluster adds, per frame and per barge-in.
ADDED = [
    *[
        (f"ws_rtt_ms_p{q}", f"cluster_rtt_ms_p{q}", f"cluster_added_rtt_ms_p{q}")
        for q in (50, 95, 99)
    ],
    *[
        (
            f"ws_bargein_client_silent_ms_p{q}",
            f"cluster_bargein_client_silent_ms_p{q}",
            f"cluster_added_bargein_silent_ms_p{q}",
        )
        for q in (50, 95, 99)
    ],
    *[
        (
            f"client_played_after_interrupt_ms_{q}",
            f"cluster_client_played_after_interrupt_ms_{q}",
            f"cluster_added_played_after_interrupt_ms_{q}",
        )
        for q in ("p50", "p95", "p99", "max")
    ],
]


def cluster_added(result: dict[str, Any]) -> dict[str, float]:
    """Cluster minus local, percentile by percentile (the difference of the medians etc.)."""
    added = {
        key: round(result[c] - result[loc], 4)
        for loc, c, key in ADDED
        if loc in result and c in result
    }
    if added:
        log(
            "  the cluster adds: "
            + ";  ".join(
                f"{k.removeprefix('cluster_added_')} {v:+.3f} ms" for k, v in added.items()
            )
        )
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description="the call protocol over WebSocket")
    parser.add_argument("--quick", action="store_true", help="a smoke run (under a minute)")
    parser.add_argument("--parts", default="echo,bargein,calls")
    parser.add_argument("--levels", help="calls at once, comma-separated (default: a ramp)")
    parser.add_argument("--window", type=float, help="measurement window per level (s)")
    parser.add_argument(
        "--keep-going", action="store_true", help="ramp on past a failure (the cost curve)"
    )
    parser.add_argument(
        "--profile", type=int, help="profile the server with this many calls (py-spy or cProfile)"
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy's executable")
    parser.add_argument(
        "--server-mode",
        choices=["local", "cluster", "both"],
        default="local",
        help="parts echo and bargein against the single-process server (local), the cluster "
        "(a private redis-server, a worker, a gateway with its dispatcher), or both in turn",
    )
    parser.add_argument(
        "--cluster-cores",
        default=",".join(str(CLUSTER_CORES[k]) for k in ("gateway", "worker", "redis")),
        help="the cores of the cluster's gateway, worker and redis-server (default: %(default)s)",
    )
    parser.add_argument(
        "--role",
        choices=["bench", "server", "asgi-echo", "tcp-echo", "cluster-gateway", "cluster-worker"],
        default="bench",
    )
    parser.add_argument("--redis", help="the cluster's store (the cluster roles)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pipeline", default="calls")
    parser.add_argument("--profile-out")
    parser.add_argument(
        "--ws",
        default="direct",
        help="the server's WebSocket implementation: direct (rspp serve's: "
        "rspp.transports.direct) or one of uvicorn's (websockets-sansio: plain ASGI)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the server's event loop: asyncio (rspp serve's) or uvloop (installed separately)",
    )
    args = parser.parse_args()
    LOOP[0] = args.loop

    if args.role in ("server", "cluster-gateway"):
        # The loop rspp serve runs on (asyncio's: uvloop measured ~10 % more CPU per call).
        redis_url = args.redis if args.role == "cluster-gateway" else None
        with asyncio.Runner(loop_factory=server_loop_factory()) as runner:
            runner.run(serve(args.port, args.pipeline, args.profile_out, args.ws, redis_url))
        return
    if args.role == "cluster-worker":
        with asyncio.Runner(loop_factory=server_loop_factory()) as runner:
            runner.run(serve_worker(args.pipeline, args.redis))
        return
    if args.role in ("asgi-echo", "tcp-echo"):
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=server_loop_factory()) as runner,
        ):
            runner.run(serve_floor(args.port, args.role))
        return
    WS_IMPL[0] = args.ws
    cores = [int(x) for x in args.cluster_cores.split(",")]
    CLUSTER_CORES.update(zip(("gateway", "worker", "redis"), cores, strict=True))
    pin_to(CLIENT_CORE)
    log(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}; server on core "
        f"{SERVER_CORE}, load generator on core {CLIENT_CORE}"
    )
    if args.quick:
        QUIET_LIMIT_S[0] = 0.0
        frames, trials, barge_calls = 200, 6, 3
        levels, warmup, window = [1, 20], 2.0, 5.0
    else:
        frames, trials, barge_calls = 1500, 60, 5
        levels = [1, 25, 50, 75, 100, 150, 200, 300, 400, 500, 600, 800, 1000]
        warmup, window = 8.0, 20.0
    if args.levels:
        levels = [int(x) for x in args.levels.split(",")]
    if args.window:
        window = args.window
    if args.profile:
        asyncio.run(part_profile(args.profile, warmup, window, args.py_spy))
        return
    parts = set(args.parts.split(","))
    local = args.server_mode in ("local", "both")
    cluster = args.server_mode in ("cluster", "both")
    result: dict[str, Any] = {}
    if "echo" in parts and local:
        echo = asyncio.run(part_echo(frames))
        result.update({k: round(v, 4) for k, v in echo.items() if isinstance(v, float)})
        result["server_cpu_us_per_frame"] = round(echo["server_cpu_us_per_frame"], 1)
        result["echo_frames"] = echo["frames"]
    if "echo" in parts and cluster:
        echo = asyncio.run(part_echo_cluster(frames))
        result.update({f"cluster_{k}": round(v, 4) for k, v in echo.items()})
    if "bargein" in parts and local:
        barge = asyncio.run(part_bargein(trials, barge_calls))
        result.update({k: round(v, 3) if isinstance(v, float) else v for k, v in barge.items()})
        result["bargein_trials"] = result.pop("trials")
        result["bargein_v2v_ms_p50"] = result.pop("v2v_ms_p50")
        result["bargein_errors"] = result.pop("errors")
    if "bargein" in parts and cluster:
        barge = asyncio.run(part_bargein(trials, barge_calls, cluster=True))
        barge = {k.removeprefix("ws_"): v for k, v in barge.items()}
        result.update(
            {f"cluster_{k}": round(v, 3) if isinstance(v, float) else v for k, v in barge.items()}
        )
    if local and cluster:
        result.update(cluster_added(result))
    if "calls" in parts and not local:
        log("(c) concurrent calls: the single-process server only (--server-mode local|both)")
    if "calls" in parts and local:
        calls = asyncio.run(
            part_calls(levels, warmup, window, 8.0 if args.quick else 40.0, args.keep_going)
        )
        result["calls_per_process"] = calls["calls_per_process"]
        cpu = calls["cpu_ms_per_call_s"]
        result["cpu_ms_per_call_s"] = round(cpu, 4) if cpu is not None else None
        result["single_call_v2v_ms_p50"] = round(calls["single_call_v2v_ms_p50"], 1)
        result["levels"] = [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for row in calls["levels"]
        ]
    targets = {}
    if "ws_frame_overhead_ms_p50" in result:
        targets["ws_frame_overhead_p50_le_0.3ms"] = result["ws_frame_overhead_ms_p50"] <= 0.3
    if "ws_bargein_client_silent_ms_p99" in result:
        targets["bargein_silent_p99_le_30ms"] = result["ws_bargein_client_silent_ms_p99"] <= 30
        targets["played_after_interrupt_le_lead"] = (
            result["client_played_after_interrupt_ms_max"] <= LEAD_MS
        )
    if "calls_per_process" in result:
        targets["calls_ge_400"] = result["calls_per_process"] >= 400
        targets["cpu_le_2ms_per_call_s"] = cpu is not None and cpu <= 2.0
    result["targets_met"] = targets
    print(json.dumps(result))


if __name__ == "__main__":
    main()
