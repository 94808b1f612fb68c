"""Event path benchmark: what Redis Streams and NATS JetStream add between a gateway and a worker.

    python benchmarks/event_path.py                  # full run: 50 sessions x 15 s (~100 s)
    python benchmarks/event_path.py --quick          # smoke run: 5 sessions x 3 s
    python benchmarks/event_path.py --engines tcp,redis --markdown

Why: in the cluster a gateway process hands each call's audio frames and barge-in controls to a
worker process through an event log. The engine for that log is chosen by what it *adds* per
frame and per control on top of a plain socket between the same two processes, so every engine
is measured here in the same run, under the same load, next to that socket.

Processes. For each engine this script (``--role bench``) starts a consumer (``--role
consumer``: the worker) and, once it is subscribed, a producer (``--role producer``: the
gateway), both this script again in OS processes of their own. No core pinning: producer,
consumer and the engine's server share the machine's cores. Clock: the producer stamps
``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for the whole system on Linux) into each
message right before handing it to the engine; the consumer subtracts it from its own
``time.monotonic_ns()`` on receipt: one-way latency, the engine's server hop included.

Engines:

* ``tcp`` (baseline): one TCP connection per session from producer to consumer, a 15-byte
  header + payload per message, no server in between.
* ``redis``: a private ``redis-server`` (``--save '' --appendonly no``, a free port, killed at
  the end). Per session a stream ``rspp:{<sid>}:in``; the producer awaits ``XADD key * e
  <payload> t <ns> k <kind> n <seq>`` (a connection pool as big as the sessions); the consumer
  runs one task per session in a loop of ``XREAD COUNT 200 BLOCK 1000 STREAMS key <last_id>``.
* ``redis-lua``: the same, but each write is ``EVALSHA`` of a script that first checks the
  fencing token in ``rspp:{<sid>}:lease`` (field ``token``, same hash slot) and only then
  ``XADD``\\ s -- how the real output path writes. A wrong token is checked to be refused.
* ``nats-mem`` / ``nats-file``: the JetStream server at ``nats://127.0.0.1:4222``, a throwaway
  stream (memory / file storage) capturing the run's session subjects ``rspp.<sid>.in``
  (listed one by one, so it can't overlap another stream's subjects), deleted at the end. One
  connection per process. The producer awaits ``js.publish`` (the PubAck, as XADD's reply).
  The consumer has one *ordered push consumer* per session (``js.subscribe(subject,
  ordered_consumer=True, cb=...)``: ephemeral, no acks, flow control): the server pushes each
  message to the consumer's inbox as soon as it is stored, where a pull consumer would need
  a fetch request outstanding -- the push style is the lower-latency one that nats-py documents.
  Skipped, with the reason printed, when nats-py is missing or the server is unreachable.

Phases, in the same two processes:

1. steady: S sessions, each a 640-byte frame (20 ms of 16 kHz PCM16) every 20 ms for the run's
   length, paced in real time with ``asyncio.sleep`` to absolute deadlines, the sessions'
   phases spread over the 20 ms; the first 0.5 s of each session is discarded. Meanwhile C
   controls (a short barge-in message) at random times on random sessions, on the *same*
   stream as that session's audio, while its frames flow.
2. behind audio: B trials, one at a time, 100 ms apart, on session ``k % S``: 50 frames and
   then one control written at once (one socket write; one Redis pipeline; 51
   ``js.publish_async`` and then their acks). The control's one-way latency shows what a
   single ordered log costs when audio is queued ahead of control.

CPU: ``getrusage`` of the producer and of the consumer, and ``/proc/<pid>/stat`` of the
engine's server (the NATS server may also be serving other clients), over the steady phase,
per steady message. The last line of output is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import random
import resource
import shlex
import socket
import struct
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from stats import percentile  # benchmarks/ is on sys.path when a script runs

SCRIPT = Path(__file__).resolve()
REDIS_BIN = "/usr/bin/redis-server"
NATS_URL = "nats://127.0.0.1:4222"
FRAME_MS = 20
FRAME_NS = FRAME_MS * 1_000_000
FRAME_BYTES = 16000 * FRAME_MS // 1000 * 2  # 640: 20 ms of 16 kHz PCM16
WARMUP_FRAMES = 25  # 0.5 s per session, discarded
BURST_FRAMES = 50
BURST_STRIDE = 64  # burst frame seq = trial * 64 + index
BURST_GAP_S = 0.1
CONTROL = b'{"type":"control.interrupt"}'
AUDIO, STEADY_CTL, BURST_AUDIO, BURST_CTL = b"a", b"c", b"b", b"x"
TCP_HDR = struct.Struct("<cIQH")  # kind, seq, sent ns, payload length
NATS_HDR = struct.Struct("<cIQ")  # kind, seq, sent ns
ENGINES = ["tcp", "redis", "redis-lua", "nats-mem", "nats-file"]
LABELS = {
    "tcp": "TCP socket (baseline)",
    "redis": "Redis Streams (XADD)",
    "redis-lua": "Redis Streams (EVALSHA fenced XADD)",
    "nats-mem": "NATS JetStream (memory)",
    "nats-file": "NATS JetStream (file)",
}
NATS_CONSUMER = "ordered push consumer per session: js.subscribe(ordered_consumer=True, cb=...)"
FENCED_XADD = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
return redis.call('XADD', KEYS[2], '*', 'e', ARGV[2], 't', ARGV[3], 'k', ARGV[4], 'n', ARGV[5])
"""

Spec = dict[str, Any]


def log(msg: str) -> None:
    """Progress goes to stderr, so that stdout ends with the one JSON line."""
    print(msg, file=sys.stderr, flush=True)


def cpu_s() -> float:
    """This process's CPU seconds (all threads, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_s(pid: int | None) -> float | None:
    """Another process's CPU seconds from /proc (10 ms ticks): the engine server's cost."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_pid(comm: str) -> int | None:
    """The pid of the one process named ``comm``, None if there are none or several."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
    return found[0] if len(found) == 1 else None


def command_line() -> str:
    """How this run was started, the interpreter relative to the working folder if inside it."""
    python = os.path.relpath(sys.executable)
    return shlex.join([sys.executable if python.startswith("..") else python, *sys.argv])


def free_port() -> int:
    """A TCP port that was free a moment ago (for the private redis-server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sid(spec: Spec, i: int) -> str:
    """Session ids are unique per run, so keys and subjects never meet an earlier run's."""
    return f"{spec['prefix']}s{i}"


# --------------------------------------------------------------------------- engines: producer


class Sender(Protocol):
    """One engine's producer side; ``send`` stamps the message right before handing it over."""

    async def send(self, session: int, kind: bytes, seq: int, payload: bytes) -> None: ...

    async def send_burst(self, session: int, msgs: list[tuple[bytes, int, bytes]]) -> None: ...

    async def aclose(self) -> None: ...


class TcpSender:
    """Baseline: a plain TCP connection per session, straight to the consumer."""

    def __init__(self, writers: list[asyncio.StreamWriter]) -> None:
        self.writers = writers

    @classmethod
    async def open(cls, spec: Spec) -> TcpSender:
        writers = []
        for _ in range(spec["sessions"]):
            _, writer = await asyncio.open_connection("127.0.0.1", spec["tcp_port"])
            writers.append(writer)
        return cls(writers)

    async def send(self, session: int, kind: bytes, seq: int, payload: bytes) -> None:
        writer = self.writers[session]
        writer.write(TCP_HDR.pack(kind, seq, time.monotonic_ns(), len(payload)) + payload)
        await writer.drain()

    async def send_burst(self, session: int, msgs: list[tuple[bytes, int, bytes]]) -> None:
        parts = [TCP_HDR.pack(k, n, time.monotonic_ns(), len(p)) + p for k, n, p in msgs]
        writer = self.writers[session]
        writer.write(b"".join(parts))
        await writer.drain()

    async def aclose(self) -> None:
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class RedisSender:
    """XADD per message, or EVALSHA of the fenced XADD when ``fenced``."""

    def __init__(self, client: Any, spec: Spec, sha: str | None) -> None:
        self.client = client
        self.keys = [f"rspp:{{{sid(spec, i)}}}:in" for i in range(spec["sessions"])]
        self.leases = [f"rspp:{{{sid(spec, i)}}}:lease" for i in range(spec["sessions"])]
        self.token = spec["token"]
        self.sha = sha

    @classmethod
    async def open(cls, spec: Spec, fenced: bool) -> RedisSender:
        import redis.asyncio as aioredis
        from redis.exceptions import ResponseError

        pool = aioredis.BlockingConnectionPool(
            host="127.0.0.1", port=spec["redis_port"], max_connections=spec["sessions"] + 8
        )
        client = aioredis.Redis.from_pool(pool)
        # Open the pool's connections before the clock starts.
        await asyncio.gather(*(client.ping() for _ in range(spec["sessions"] + 1)))
        sha = None
        if fenced:
            sha = str(await client.script_load(FENCED_XADD))
        sender = cls(client, spec, sha)
        if sha is not None:
            for lease in sender.leases:
                await client.hset(lease, "token", sender.token)
            try:  # the fence must refuse a stale writer
                await client.evalsha(
                    sha, 2, sender.leases[0], sender.keys[0], "stale", b"", 0, b"a", 0
                )
            except ResponseError as exc:
                assert "FENCED" in str(exc), exc
            else:
                raise AssertionError("the fenced XADD accepted a stale token")
        return sender

    def _fields(self, kind: bytes, seq: int, payload: bytes) -> dict[str, Any]:
        return {"e": payload, "t": time.monotonic_ns(), "k": kind, "n": seq}

    async def send(self, session: int, kind: bytes, seq: int, payload: bytes) -> None:
        if self.sha is None:
            await self.client.xadd(self.keys[session], self._fields(kind, seq, payload))
        else:
            await self.client.evalsha(
                self.sha,
                2,
                self.leases[session],
                self.keys[session],
                self.token,
                payload,
                time.monotonic_ns(),
                kind,
                seq,
            )

    async def send_burst(self, session: int, msgs: list[tuple[bytes, int, bytes]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for kind, seq, payload in msgs:
                if self.sha is None:
                    pipe.xadd(self.keys[session], self._fields(kind, seq, payload))
                else:
                    pipe.evalsha(
                        self.sha,
                        2,
                        self.leases[session],
                        self.keys[session],
                        self.token,
                        payload,
                        time.monotonic_ns(),
                        kind,
                        seq,
                    )
            await pipe.execute()

    async def aclose(self) -> None:
        await self.client.aclose()


class NatsSender:
    """``js.publish`` per message (awaits the PubAck); a burst is publish_async + the acks."""

    def __init__(self, nc: Any, spec: Spec) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = [f"rspp.{sid(spec, i)}.in" for i in range(spec["sessions"])]

    @classmethod
    async def open(cls, spec: Spec) -> NatsSender:
        import nats

        return cls(await nats.connect(spec["nats_url"], allow_reconnect=False), spec)

    async def send(self, session: int, kind: bytes, seq: int, payload: bytes) -> None:
        data = NATS_HDR.pack(kind, seq, time.monotonic_ns()) + payload
        await self.js.publish(self.subjects[session], data)

    async def send_burst(self, session: int, msgs: list[tuple[bytes, int, bytes]]) -> None:
        acks = []
        for kind, seq, payload in msgs:
            data = NATS_HDR.pack(kind, seq, time.monotonic_ns()) + payload
            acks.append(await self.js.publish_async(self.subjects[session], data))
        await asyncio.gather(*acks)

    async def aclose(self) -> None:
        await self.nc.close()


async def open_sender(spec: Spec) -> Sender:
    """The producer side of ``spec['engine']``."""
    engine = spec["engine"]
    if engine == "tcp":
        return await TcpSender.open(spec)
    if engine in ("redis", "redis-lua"):
        return await RedisSender.open(spec, fenced=engine == "redis-lua")
    return await NatsSender.open(spec)


async def produce(spec: Spec) -> dict[str, Any]:
    """The gateway: paced frames on every session plus controls, then the bursts."""
    sessions, frames = spec["sessions"], spec["frames"]
    rng = random.Random(spec["seed"])
    payload = rng.randbytes(FRAME_BYTES)
    span = frames * FRAME_MS / 1000
    schedule = sorted(
        (rng.uniform(WARMUP_FRAMES * FRAME_MS / 1000 + 0.1, span - 0.3), rng.randrange(sessions))
        for _ in range(spec["controls"])
    )
    lateness: list[float] = []  # ns
    sender = await open_sender(spec)
    try:
        start = time.monotonic_ns() + 50_000_000
        cpu0, srv0 = cpu_s(), proc_cpu_s(spec["server_pid"])

        async def pace(deadline: int) -> None:
            delay = deadline - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            lateness.append(time.monotonic_ns() - deadline)

        async def session(i: int) -> None:
            base = start + i * FRAME_NS // sessions
            for n in range(frames):
                await pace(base + n * FRAME_NS)
                await sender.send(i, AUDIO, n, payload)

        async def controls() -> None:
            for k, (at_s, i) in enumerate(schedule):
                await pace(start + int(at_s * 1e9))
                await sender.send(i, STEADY_CTL, k, CONTROL)

        async with asyncio.TaskGroup() as tg:
            for i in range(sessions):
                tg.create_task(session(i))
            tg.create_task(controls())
        cpu1, srv1 = cpu_s(), proc_cpu_s(spec["server_pid"])

        await asyncio.sleep(0.5)  # let the consumer drain before the bursts
        for k in range(spec["bursts"]):
            msgs = [(BURST_AUDIO, k * BURST_STRIDE + j, payload) for j in range(BURST_FRAMES)]
            msgs.append((BURST_CTL, k, CONTROL))
            await sender.send_burst(k % sessions, msgs)
            await asyncio.sleep(BURST_GAP_S)
    finally:
        await sender.aclose()
    steady = sessions * frames + spec["controls"]
    server = None if srv0 is None or srv1 is None else (srv1 - srv0) / steady * 1e6
    return {
        "cpu_us_per_msg": (cpu1 - cpu0) / steady * 1e6,
        "server_cpu_us_per_msg": server,
        "late_ms_p50": percentile(lateness, 0.5) / 1e6,
        "late_ms_p99": percentile(lateness, 0.99) / 1e6,
        "steady_s": (time.monotonic_ns() - start) / 1e9,
    }


# --------------------------------------------------------------------------- engines: consumer


class Recorder:
    """The consumer's tally: latencies by kind, and the CPU over the steady phase."""

    def __init__(self, spec: Spec) -> None:
        self.steady_total = spec["sessions"] * spec["frames"] + spec["controls"]
        self.total = self.steady_total + spec["bursts"] * (BURST_FRAMES + 1)
        self.frames: list[float] = []  # ns
        self.controls: list[float] = []  # ns
        self.burst_ctl: list[float] = []  # ns
        self.burst_first: list[float] = []  # ns
        self.burst_from_start: list[float] = []  # ns
        self.burst_start: dict[int, int] = {}  # trial -> sent ns of its first frame
        self.count = 0
        self.steady = 0
        self.cpu0: float | None = None
        self.cpu1: float | None = None
        self.done = asyncio.Event()

    def on(self, kind: bytes, seq: int, sent: int, now: int) -> None:
        if self.cpu0 is None:
            self.cpu0 = cpu_s()
        latency = now - sent
        if kind == AUDIO:
            self.steady += 1
            if seq >= WARMUP_FRAMES:
                self.frames.append(latency)
        elif kind == STEADY_CTL:
            self.steady += 1
            self.controls.append(latency)
        elif kind == BURST_AUDIO:
            if seq % BURST_STRIDE == 0:
                self.burst_first.append(latency)
                self.burst_start[seq // BURST_STRIDE] = sent
        elif kind == BURST_CTL:
            self.burst_ctl.append(latency)
            if seq in self.burst_start:
                self.burst_from_start.append(now - self.burst_start[seq])
        self.count += 1
        if self.steady == self.steady_total and self.cpu1 is None:
            self.cpu1 = cpu_s()
        if self.count >= self.total:
            self.done.set()

    def result(self) -> dict[str, Any]:
        cpu = None
        if self.cpu0 is not None and self.cpu1 is not None:
            cpu = (self.cpu1 - self.cpu0) / self.steady_total * 1e6
        return {
            "frames_ns": self.frames,
            "controls_ns": self.controls,
            "burst_ctl_ns": self.burst_ctl,
            "burst_first_ns": self.burst_first,
            "burst_from_start_ns": self.burst_from_start,
            "received": self.count,
            "expected": self.total,
            "cpu_us_per_msg": cpu,
        }


async def consume_tcp(spec: Spec, rec: Recorder, ready: Callable[[int], None]) -> None:
    """Baseline consumer: a listening socket, one reader task per session connection."""
    async with asyncio.TaskGroup() as tg:
        handlers: list[asyncio.Task[None]] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    kind, seq, sent, size = TCP_HDR.unpack(await reader.readexactly(TCP_HDR.size))
                    await reader.readexactly(size)
                    rec.on(kind, seq, sent, time.monotonic_ns())
            except asyncio.IncompleteReadError:
                pass
            finally:
                writer.close()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(tg.create_task(handle(reader, writer)))

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        ready(server.sockets[0].getsockname()[1])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rec.done.wait(), spec["timeout_s"])
        server.close()
        for task in handlers:
            task.cancel()


async def consume_redis(spec: Spec, rec: Recorder, ready: Callable[[int], None]) -> None:
    """One task per session, each in a blocking XREAD loop on its own connection."""
    import redis.asyncio as aioredis

    sessions = spec["sessions"]
    pool = aioredis.BlockingConnectionPool(
        host="127.0.0.1", port=spec["redis_port"], max_connections=sessions + 4
    )
    client = aioredis.Redis.from_pool(pool)
    await asyncio.gather(*(client.ping() for _ in range(sessions)))

    async def reader(i: int) -> None:
        key = f"rspp:{{{sid(spec, i)}}}:in"
        last: bytes | str = "0-0"
        while not rec.done.is_set():  # XREAD BLOCK 1000: seen within a second
            reply: Any = await client.xread({key: last}, count=200, block=1000)
            now = time.monotonic_ns()
            for _key, entries in reply:  # RESP2 (redis-py's default): [[key, entries]]
                for entry_id, fields in entries:
                    last = entry_id
                    rec.on(fields[b"k"], int(fields[b"n"]), int(fields[b"t"]), now)

    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(sessions):
                tg.create_task(reader(i))
            ready(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rec.done.wait(), spec["timeout_s"])
            # No cancel: on Python 3.11 a reader cancelled right after a reply loses the
            # cancel (redis-py 8 wraps each write in asyncio.wait_for, socket_timeout being 5 s
            # by default, and 3.11's wait_for drops a cancel that races a finished write), so
            # it would loop on. The readers see the flag when their XREAD BLOCK 1000 returns.
            rec.done.set()
    finally:
        await client.aclose()


async def consume_nats(spec: Spec, rec: Recorder, ready: Callable[[int], None]) -> None:
    """One ordered push consumer per session subject; the callback stamps the receipt."""
    import nats

    nc = await nats.connect(spec["nats_url"], allow_reconnect=False)
    try:
        js = nc.jetstream()

        async def on_msg(msg: Any) -> None:
            now = time.monotonic_ns()
            kind, seq, sent = NATS_HDR.unpack_from(msg.data)
            rec.on(kind, seq, sent, now)

        for i in range(spec["sessions"]):
            await js.subscribe(
                f"rspp.{sid(spec, i)}.in", stream=spec["stream"], ordered_consumer=True, cb=on_msg
            )
        ready(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rec.done.wait(), spec["timeout_s"])
    finally:
        await nc.close()


async def consume(spec: Spec) -> dict[str, Any]:
    """The worker: receive everything the producer sends, or give up at the timeout."""
    rec = Recorder(spec)

    def ready(port: int) -> None:
        print(f"READY {port}", flush=True)

    engine = spec["engine"]
    if engine == "tcp":
        await consume_tcp(spec, rec, ready)
    elif engine in ("redis", "redis-lua"):
        await consume_redis(spec, rec, ready)
    else:
        await consume_nats(spec, rec, ready)
    if not rec.done.is_set():
        log(f"consumer ({engine}): timed out with {rec.count} of {rec.total} messages")
    return rec.result()


# --------------------------------------------------------------------------- orchestration


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[tuple[int, int, str]]:
    """A private redis-server on a free port, no persistence; killed on the way out."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rspp-bench-redis-") as workdir:
        argv = [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", workdir, "--logfile", ""]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
        try:
            client = aioredis.Redis(port=port)
            try:
                for _ in range(100):
                    with contextlib.suppress(OSError, RedisConnectionError):
                        await client.ping()
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError("redis-server did not answer")
                version = str((await client.info("server"))["redis_version"])
            finally:
                await client.aclose()
            yield port, proc.pid, version
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def nats_check(url: str) -> tuple[str | None, str]:
    """None and the server's version if JetStream answers; otherwise why the NATS rows skip."""
    try:
        import nats
    except ImportError:
        return "nats-py is not installed (.venv/bin/pip install nats-py)", ""
    # A plain TCP probe first: nats.connect retries a refused first connect for minutes.
    where = urllib.parse.urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(where.hostname or "127.0.0.1", where.port or 4222), 2
        )
        writer.close()
    except (OSError, TimeoutError) as exc:
        return f"no NATS server at {url}: {exc!r}", ""

    async def quiet(exc: Exception) -> None:
        pass

    try:
        nc = await nats.connect(
            url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0, error_cb=quiet
        )
    except Exception as exc:  # any failure to connect means: no NATS rows
        return f"no NATS server at {url}: {exc!r}", ""
    try:
        await nc.jetstream().account_info()
        version = nc.connected_server_version
        return None, f"{version.major}.{version.minor}.{version.patch}"
    except Exception as exc:
        return f"JetStream not available at {url}: {exc!r}", ""
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def nats_stream(spec: Spec, storage: str) -> AsyncIterator[None]:
    """A throwaway JetStream stream over exactly this run's session subjects."""
    import nats
    from nats.js.api import StorageType

    nc = await nats.connect(spec["nats_url"], allow_reconnect=False)
    js = nc.jetstream()
    try:
        subjects = [f"rspp.{sid(spec, i)}.in" for i in range(spec["sessions"])]
        await js.add_stream(name=spec["stream"], subjects=subjects, storage=StorageType(storage))
        try:
            yield
        finally:
            await js.delete_stream(spec["stream"])
    finally:
        await nc.close()


async def run_pair(spec: Spec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Consumer first (until subscribed), then the producer; both killed if still alive."""
    cmd = [sys.executable, str(SCRIPT)]
    pipe = asyncio.subprocess.PIPE
    consumer = await asyncio.create_subprocess_exec(
        *cmd, "--role", "consumer", "--spec", json.dumps(spec), stdout=pipe
    )
    producer: asyncio.subprocess.Process | None = None
    try:
        assert consumer.stdout is not None
        line = await asyncio.wait_for(consumer.stdout.readline(), 30)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"consumer did not get ready: {line!r}")
        spec = {**spec, "tcp_port": int(line.split()[1])}
        producer = await asyncio.create_subprocess_exec(
            *cmd, "--role", "producer", "--spec", json.dumps(spec), stdout=pipe
        )
        pout, _ = await asyncio.wait_for(producer.communicate(), spec["timeout_s"] + 30)
        cout, _ = await asyncio.wait_for(consumer.communicate(), 30)
        if producer.returncode or consumer.returncode:
            raise RuntimeError(
                f"producer rc {producer.returncode}, consumer rc {consumer.returncode}"
            )
        return json.loads(pout.splitlines()[-1]), json.loads(cout.splitlines()[-1])
    finally:
        for proc in (producer, consumer):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


def summarize(prod: dict[str, Any], cons: dict[str, Any]) -> dict[str, Any]:
    """Percentiles in ms of the consumer's latencies, and CPU per message of the three sides."""

    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q) / 1e6, 4) if values else None

    frames, ctl = cons["frames_ns"], cons["controls_ns"]
    burst, first = cons["burst_ctl_ns"], cons["burst_first_ns"]

    def rnd(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "frame_ms_p50": ms(frames, 0.5),
        "frame_ms_p95": ms(frames, 0.95),
        "frame_ms_p99": ms(frames, 0.99),
        "control_ms_p50": ms(ctl, 0.5),
        "control_ms_p95": ms(ctl, 0.95),
        "control_ms_max": ms(ctl, 1.0),
        "behind_audio_control_ms_p50": ms(burst, 0.5),
        "behind_audio_control_ms_p95": ms(burst, 0.95),
        "behind_audio_control_ms_max": ms(burst, 1.0),
        "behind_audio_control_from_burst_ms_p50": ms(cons["burst_from_start_ns"], 0.5),
        "behind_audio_first_frame_ms_p50": ms(first, 0.5),
        "producer_cpu_us_per_msg": rnd(prod["cpu_us_per_msg"]),
        "consumer_cpu_us_per_msg": rnd(cons["cpu_us_per_msg"]),
        "server_cpu_us_per_msg": rnd(prod["server_cpu_us_per_msg"]),
        "producer_late_ms_p99": round(prod["late_ms_p99"], 3),
        "frames": len(frames),
        "controls": len(ctl),
        "bursts": len(burst),
        "lost": cons["expected"] - cons["received"],
    }


Columns = list[tuple[str, str]]
FRAME_TABLE: tuple[str, Columns] = (
    "per audio frame: one-way latency (ms), CPU (µs per steady message)",
    [
        ("p50", "frame_ms_p50"),
        ("p95", "frame_ms_p95"),
        ("p99", "frame_ms_p99"),
        ("p50 added vs TCP", "added_frame_ms_p50"),
        ("CPU producer", "producer_cpu_us_per_msg"),
        ("CPU consumer", "consumer_cpu_us_per_msg"),
        ("CPU server", "server_cpu_us_per_msg"),
    ],
)
CONTROL_TABLE: tuple[str, Columns] = (
    "per barge-in control: one-way latency (ms)",
    [
        ("audio flowing p50", "control_ms_p50"),
        ("p95", "control_ms_p95"),
        ("max", "control_ms_max"),
        ("behind 50 frames p50", "behind_audio_control_ms_p50"),
        ("p95", "behind_audio_control_ms_p95"),
        ("max", "behind_audio_control_ms_max"),
        ("from burst start p50", "behind_audio_control_from_burst_ms_p50"),
    ],
)


def fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def cells(row: dict[str, Any], columns: Columns) -> list[str]:
    return [fmt(row.get(key), 1 if "cpu" in key else 3) for _, key in columns]


def rich_table(results: dict[str, dict[str, Any]], spec: tuple[str, Columns]) -> Table:
    title, columns = spec
    table = Table(title=title)
    table.add_column("engine")
    for name, _ in columns:
        table.add_column(name, justify="right")
    for engine, row in results.items():
        table.add_row(LABELS[engine], *cells(row, columns))
    return table


def markdown(results: dict[str, dict[str, Any]], spec: tuple[str, Columns]) -> str:
    """The same table for BENCHMARKS.md."""
    title, columns = spec
    head = "| engine | " + " | ".join(name for name, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [f"| {LABELS[e]} | " + " | ".join(cells(r, columns)) + " |" for e, r in results.items()]
    return "\n".join([f"{title}:", "", head, rule, *rows])


async def bench(args: argparse.Namespace) -> None:
    """Every engine in turn, same parameters; the table, then the JSON line."""
    if args.quick:
        sessions, seconds, controls, bursts = 5, 3.0, 50, 10
    else:
        sessions, seconds, controls, bursts = 50, 15.0, 200, 30
    sessions = args.sessions or sessions
    seconds = args.seconds or seconds
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines: {sorted(unknown)}")
    frames = int(seconds * 1000 / FRAME_MS)
    tag = uuid.uuid4().hex[:8]
    base: Spec = {
        "sessions": sessions,
        "frames": frames,
        "controls": controls,
        "bursts": bursts,
        "seed": 20261202,
        "token": f"lease-{tag}",
        "nats_url": args.nats_url,
        "timeout_s": seconds + bursts * (BURST_GAP_S + 0.2) + 30,
        "redis_port": 0,
        "server_pid": None,
        "tcp_port": 0,
    }
    load_start = os.getloadavg()[0]
    log(
        f"event path: {sessions} sessions x {seconds:g} s ({frames} frames each), {controls} "
        f"controls, {bursts} bursts of {BURST_FRAMES} frames + 1 control; machine "
        f"{platform.platform()}, {os.cpu_count()} cores; load {load_start:.2f}"
    )
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {"python": platform.python_version()}
    nats_reason, nats_version = None, ""
    if any(e.startswith("nats") for e in engines):
        nats_reason, nats_version = await nats_check(args.nats_url)
        if nats_reason:
            log(f"skipping the NATS rows: {nats_reason}")
        else:
            versions["nats-server"] = nats_version
            versions["nats-py"] = importlib.metadata.version("nats-py")
    async with contextlib.AsyncExitStack() as stack:
        redis_port, redis_pid = 0, None
        if any(e.startswith("redis") for e in engines):
            redis_port, redis_pid, version = await stack.enter_async_context(redis_server())
            versions["redis-server"] = version
            versions["redis-py"] = importlib.metadata.version("redis")
        for engine in engines:
            spec = {**base, "engine": engine, "prefix": f"b{tag}{engine.replace('-', '')}"}
            if engine.startswith("nats") and nats_reason:
                skipped[engine] = nats_reason
                continue
            log(f"  {LABELS[engine]} ...")
            if engine.startswith("redis"):
                spec |= {"redis_port": redis_port, "server_pid": redis_pid}
                prod, cons = await run_pair(spec)
            elif engine.startswith("nats"):
                storage = engine.removeprefix("nats-").replace("mem", "memory")
                spec |= {"stream": f"RSPP_BENCH_{tag}_{storage}".upper()}
                spec["server_pid"] = find_pid("nats-server")
                async with nats_stream(spec, storage):
                    prod, cons = await run_pair(spec)
            else:
                prod, cons = await run_pair(spec)
            results[engine] = summarize(prod, cons)
            if results[engine]["lost"]:
                log(f"    {engine}: {results[engine]['lost']} messages never arrived")
    if "tcp" in results:
        floor = results["tcp"]["frame_ms_p50"]
        for row in results.values():
            row["added_frame_ms_p50"] = round(row["frame_ms_p50"] - floor, 4)

    ratios: dict[str, float] = {}
    if "redis" in results and "nats-mem" in results:
        for key in ("frame_ms_p50", "control_ms_p50", "behind_audio_control_ms_p50"):
            ratios[key] = round(results["redis"][key] / results["nats-mem"][key], 3)

    console = Console(width=160)
    for spec_ in (FRAME_TABLE, CONTROL_TABLE):
        console.print(rich_table(results, spec_))
    for engine, reason in skipped.items():
        console.print(f"skipped {engine}: {reason}")
    if args.markdown:
        print(markdown(results, FRAME_TABLE), markdown(results, CONTROL_TABLE), sep="\n\n")
    print(
        json.dumps(
            {
                "bench": "event_path",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": command_line(),
                "machine": {
                    "platform": platform.platform(),
                    "cpu_count": os.cpu_count(),
                    "loadavg_1m_start": round(load_start, 2),
                    "loadavg_1m_end": round(os.getloadavg()[0], 2),
                },
                "versions": versions,
                "params": {
                    "sessions": sessions,
                    "seconds": seconds,
                    "frame_bytes": FRAME_BYTES,
                    "controls": controls,
                    "bursts": bursts,
                    "burst_frames": BURST_FRAMES,
                },
                "nats_consumer": NATS_CONSUMER,
                "results": results,
                "redis_over_nats_mem": ratios,
                "skipped": skipped,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis Streams vs NATS JetStream event path")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 sessions x 3 s")
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default 50)")
    parser.add_argument("--seconds", type=float, help="audio per session (default 15)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=",".join(ENGINES))
    parser.add_argument("--nats-url", default=NATS_URL)
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--role", choices=["bench", "producer", "consumer"], default="bench")
    parser.add_argument("--spec", help="JSON parameters of a producer or consumer (internal)")
    args = parser.parse_args()
    if args.role == "bench":
        asyncio.run(bench(args))
        return
    spec = json.loads(args.spec)
    result = asyncio.run(produce(spec) if args.role == "producer" else consume(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
