"""``rspp gateway``: the call server in front of a cluster, running no pipeline.

:class:`ClusterHost` is a :class:`~rspp.transports.port.SessionHost` whose
sessions run on workers: the same app as ``rspp serve`` (browser page,
WebSocket call protocol, Twilio) serves through it. A new call is a session
record and a request to the dispatchers; once a worker has taken it, its
:class:`ClusterPort` appends the caller's input to the session's input log and
delivers the session's output stream to the call, through an
:class:`~rspp.cluster.stamps.OutputFilter` (no stale owner heard, nothing
repeated by a new owner heard twice, a cancel within a read applied before
the audio it voids).

A call does not depend on the gateway that took it: another gateway can
:meth:`ClusterHost.reattach` it (the client reconnects there with its resume
token) and carry on from the client's last output position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import msgspec

from rspp.cluster.metrics import GatewayMetrics
from rspp.cluster.records import OutputEntry, Request, SessionRecord
from rspp.cluster.stamps import OutputFilter
from rspp.cluster.store import READ_PAGE, SessionStore, StoreError, StoreUnavailable
from rspp.events import DecodeError, Event, MsgpackCodec, PlaybackPosition
from rspp.kernel import PipelineSpec, SessionClosed
from rspp.transports.port import HostFull, OutputBuffer, lead_of

__all__ = ["ClusterHost", "ClusterPort"]

log = logging.getLogger("rspp.cluster.gateway")

_CODEC = MsgpackCodec()
_ENTRY = msgspec.msgpack.Decoder(OutputEntry)
#: Input held while the store is away, at most (then the oldest audio goes).
INPUT_LIMIT = 500
#: A session's keys outlive their last write by this long.
SESSION_TTL_S = 24 * 3600


class ClusterPort:
    """A transport's handle on a session that runs on some worker of the cluster."""

    def __init__(
        self,
        host: ClusterHost,
        sid: str,
        pipeline: str,
        spec: PipelineSpec,
        *,
        resume_after: tuple[int, int] | None = None,
        seq_after: tuple[int, int] | None = None,
    ) -> None:
        self._host = host
        self._store = host.store
        self._sid = sid
        self.pipeline = pipeline
        self._spec = spec
        self._out = OutputBuffer(4096)
        self._filter = OutputFilter()
        self._input: list[bytes] = []
        self._input_dropped = 0
        self._wake = asyncio.Event()
        self._closing = ""
        self._closed = False
        self._ended = asyncio.Event()
        self._resume_after = resume_after
        self._seq_after = seq_after
        self._task: asyncio.Task[None] | None = None

    # -- the SessionPort interface ----------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._sid

    @property
    def sample_rate(self) -> int:
        return self._spec.audio.sample_rate

    @property
    def lead_ms(self) -> float:
        return lead_of(self._spec)

    @property
    def closed(self) -> bool:
        return self._closed or self._ended.is_set()

    async def push(self, event: Event) -> None:
        self.push_nowait(event)

    def push_nowait(self, event: Event) -> None:
        if self.closed or self._closing:
            raise SessionClosed(f"session {self._sid} has ended")
        self._input.append(_CODEC.encode(event))
        if len(self._input) > INPUT_LIMIT:
            del self._input[0]
            self._input_dropped += 1
            self._host.metrics.input_dropped.inc()
        self._wake.set()

    def drops(self) -> Mapping[tuple[str, str, str], int]:
        f = self._filter
        found = {
            ("gateway", "output", "repeated_by_new_owner"): f.duplicates,
            ("gateway", "output", "stale_owner"): f.stale,
            ("gateway", "input", "store_unavailable"): self._input_dropped,
            ("gateway", "output", "nobody_reading"): self._out.dropped,
        }
        return {key: n for key, n in found.items() if n}

    def report_playback(self, turn: int, played_ms: float) -> None:
        with contextlib.suppress(SessionClosed):
            self.push_nowait(PlaybackPosition(turn=turn, played_ms=played_ms))

    def listen(self, callback: Callable[[Event], None]) -> None:
        self._out.listen(callback)

    def output(self) -> AsyncIterator[Event]:
        return self._out.drain()

    async def close(self, reason: str = "closed") -> None:
        """End the session: a close goes into its input log, after everything before it."""
        if self._closed:
            return
        if not self._ended.is_set() and not self._closing and not self._host.leaving:
            self._closing = reason
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._ended.wait()
        self._closed = True
        self._out.close()
        if self._task is not None:
            self._task.cancel()

    # -- the pumps (a task of the host's group) ---------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write())
                await self._read()
                writer.cancel()
        finally:
            self._ended.set()
            self._out.end()

    async def _write(self) -> None:
        backoff = 0.02
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._input or self._closing:
                batch, self._input = self._input, []
                close = self._closing
                try:
                    async with self._host.metrics.store.time("append_input"):
                        await self._store.append_input(self._sid, batch, close=close)
                    backoff = 0.02
                except StoreUnavailable as exc:
                    self._host.trouble(exc)
                    self._input[:0] = batch
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                if close:
                    return

    async def _read(self) -> None:
        after = "0"
        first = True
        backoff = 0.02
        while True:
            try:
                found = await self._store.read_output(self._sid, after, 0 if first else 1000)
                backoff = 0.02
            except StoreUnavailable as exc:
                self._host.trouble(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if first:
                # The whole backlog first (a reattached call's may be thousands of entries):
                # the client's resume point is cut in all of it, not in the first read. Up
                # to the end it had then: not "until a read finds nothing new", which, with
                # a reply's audio appended every 20 ms and reads slower than that (a loaded
                # machine), held the call silent until the reply ended.
                page = found
                while len(page) >= READ_PAGE:
                    page = await self._backlog(found[-1][0])
                    found += page
            if not found:
                first = False
                continue
            after = found[-1][0]
            items: list[tuple[OutputEntry, Event]] = []
            for _, raw in found:
                try:
                    entry = _ENTRY.decode(raw)
                    event = _CODEC.decode(entry.event)
                except (msgspec.DecodeError, DecodeError) as exc:
                    log.warning("session %s: undecodable output dropped: %s", self._sid, exc)
                    continue
                if not event.inc:
                    # Text and turn events carry no incarnation from the kernel; the client
                    # needs its writer's to say what it last had (``last_seq``). Guessed
                    # from the last audio frame, a new owner's text that came before its
                    # audio was taken for the old one's, and resent after a reattach.
                    event.inc = entry.token
                items.append((entry, event))
            if first and self._resume_after is not None:
                items = self._after_resume_point(items)
            first = False
            before = (self._filter.duplicates, self._filter.stale)
            for event in self._filter.batch(items):
                self._out.put(event)
                if event.kind == "session.end":
                    return
            m = self._host.metrics
            m.duplicates.inc(self._filter.duplicates - before[0])
            m.stale.inc(self._filter.stale - before[1])

    async def _backlog(self, after: str) -> list[tuple[str, bytes]]:
        """More of the output already there (not waiting for new output)."""
        while True:
            try:
                return await self._store.read_output(self._sid, after, 0)
            except StoreUnavailable as exc:
                self._host.trouble(exc)
                await asyncio.sleep(0.05)

    def _after_resume_point(
        self, items: list[tuple[OutputEntry, Event]]
    ) -> list[tuple[OutputEntry, Event]]:
        """What a reattached client has not received, judged event by event.

        A positioned event: above the client's ``last_pos``. Another (text, turn
        events): above its ``last_seq`` -- ``(inc, seq)``, the incarnation being the
        writer's token, so a new owner's events (which number ``seq`` on from an older
        checkpoint) are never taken for old ones. A client that does not say
        ``last_seq`` gets the text after its last positioned event again.
        """
        mark = self._resume_after
        assert mark is not None
        seq_mark = self._seq_after
        last_known = -1
        if seq_mark is None:
            for i, (entry, event) in enumerate(items):
                if event.pos and (event.inc or entry.token, event.pos) <= mark:
                    last_known = i
        kept: list[tuple[OutputEntry, Event]] = []
        for i, (entry, event) in enumerate(items):
            inc = event.inc or entry.token
            if event.pos:
                known = (inc, event.pos) <= mark
            elif seq_mark is not None:
                known = (inc, event.seq) <= seq_mark
            else:
                known = i < last_known
            if known:
                self._filter.admit(entry, event.kind)  # the client has it: not again
            else:
                kept.append((entry, event))
        return kept


class ClusterHost:
    """Sessions on a cluster's workers (see the module docstring)."""

    def __init__(
        self,
        store: SessionStore,
        specs: Mapping[str, PipelineSpec],
        *,
        open_timeout_s: float = 10.0,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        if not specs:
            raise ValueError("a gateway needs at least one pipeline spec")
        self.store = store
        self._specs = dict(specs)
        self.open_timeout_s = open_timeout_s
        self.metrics = metrics or GatewayMetrics()
        self._ports: dict[str, ClusterPort] = {}
        self._group: asyncio.TaskGroup | None = None
        self._ready = False
        self._checked = 0.0
        self.store_ok = True
        self._trouble_at = 0.0
        #: This gateway is shutting down: its calls are not ended (they reconnect elsewhere).
        self.leaving = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the ports' tasks (the server's lifespan)."""
        async with asyncio.TaskGroup() as tg:
            self._group = tg
            try:
                yield
            finally:
                for port in list(self._ports.values()):
                    if port._task is not None:
                        port._task.cancel()
                self._group = None

    def leave(self) -> None:
        """Stop serving without ending the calls (their clients reconnect to another gateway)."""
        self.leaving = True
        for port in list(self._ports.values()):
            if port._task is not None:
                port._task.cancel()

    def trouble(self, exc: StoreError) -> None:
        self.store_ok = False
        now = time.monotonic()
        if now - self._trouble_at > 1.0:
            self._trouble_at = now
            log.warning("gateway: store unavailable (%s); input is held meanwhile", exc)

    # -- SessionHost ------------------------------------------------------------------------

    @property
    def pipelines(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def ready(self) -> bool:
        """Ready when the store answers and at least one worker beats (checked each second)."""
        return self._ready

    async def check(self) -> bool:
        try:
            self._ready = bool(await self.store.workers(2000))
            self.store_ok = True
        except StoreError:
            self._ready = False
        return self._ready

    async def watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(1.0)

    def describe(self) -> dict[str, dict[str, float]]:
        return {
            name: {"sample_rate": spec.audio.sample_rate, "lead_ms": lead_of(spec)}
            for name, spec in self._specs.items()
        }

    def active(self) -> int:
        for sid in [sid for sid, port in self._ports.items() if port.closed]:
            del self._ports[sid]
        return len(self._ports)

    async def open(self, pipeline: str = "", session_id: str | None = None) -> ClusterPort:
        name = pipeline or next(iter(self._specs))
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"no pipeline {name!r} here (have: {', '.join(self._specs)})")
        sid = session_id or uuid.uuid4().hex
        try:
            await self.store.create(SessionRecord(id=sid, pipeline=name), SESSION_TTL_S)
            request = Request(session=sid, pipeline=name, why="open")
            await self.store.request(msgspec.msgpack.encode(request))
            await self._wait_running(sid, request)
        except StoreUnavailable as exc:
            raise SessionClosed(f"the cluster's store is unavailable: {exc}") from exc
        return self._start(ClusterPort(self, sid, name, spec))

    async def _wait_running(self, sid: str, request: Request) -> None:
        deadline = time.monotonic() + self.open_timeout_s
        ask_again = time.monotonic() + 2.0
        delay = 0.002
        while time.monotonic() < deadline:
            if time.monotonic() > ask_again:
                # The worker it went to died before taking it (its beat has gone stale
                # since): ask again; a second placement is harmless, one lease wins.
                await self.store.request(msgspec.msgpack.encode(request))
                ask_again = time.monotonic() + 2.0
            record = await self.store.record(sid)
            if record is not None and record.state == "refused":
                self.metrics.refused.labels(record.reason or "refused").inc()
                raise HostFull(record.reason or "the cluster refused the call")
            _, token, _ = await self.store.lease_of(sid)
            if token:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        self.metrics.refused.labels("timeout").inc()
        await self.store.update(sid, state="refused", reason="no worker took it in time")
        raise HostFull(f"no worker took the call within {self.open_timeout_s:.0f} s")

    async def reattach(
        self,
        sid: str,
        last_pos: tuple[int, int] | None,
        last_seq: tuple[int, int] | None = None,
    ) -> ClusterPort | None:
        """A call another gateway served (it died): carry on from the client's last position.

        None: no such call (any more). Raises :class:`~rspp.kernel.SessionClosed` when
        the store cannot say now (the client tries again).
        """
        if sid in self._ports and not self._ports[sid].closed:
            return self._ports[sid]
        try:
            record = await self.store.record(sid)
        except StoreError as exc:
            raise SessionClosed(f"the cluster's store is unavailable: {exc}") from exc
        if record is None or record.state in ("ended", "refused"):
            return None
        spec = self._specs.get(record.pipeline)
        if spec is None:
            return None
        port = ClusterPort(
            self, sid, record.pipeline, spec, resume_after=last_pos or (0, 0), seq_after=last_seq
        )
        return self._start(port)

    def _start(self, port: ClusterPort) -> ClusterPort:
        if self._group is None:
            raise RuntimeError("the cluster host is not running (use `async with host.running()`)")
        self.active()  # forget the ports of calls that ended
        self._ports[port.session_id] = port
        port._task = self._group.create_task(port.run())
        return port
