"""Calls that outlive their connections: the server's side of reconnecting.

A :class:`Call` is one conversation as the transport sees it: a session port,
a resume token, the output it still holds for a client that comes back
(bot audio and clears, by output position), and at most one live
:class:`Connection`. A dropped connection leaves the call running for the
resume window; a connection that resumes it gets what it missed (above the
``(inc, pos)`` it last received) and carries on. The :class:`CallRegistry`
owns every call's task (the server's task group), so nothing outlives the
server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from rspp.events import Event
from rspp.transports.auth import Auth
from rspp.transports.metrics import DropExport, ServerMetrics
from rspp.transports.port import SessionHost, SessionPort

__all__ = ["Call", "CallRegistry", "Connection"]

log = logging.getLogger("rspp.transports")

#: Output a call keeps for a client that reconnects (``docs/protocol.md``, reconnect).
REPLAY_AUDIO_S = 10.0
REPLAY_MAX_EVENTS = 4096

Frame = str | bytes


class DirectWriter(Protocol):
    """A socket that takes a frame at once (:class:`rspp.transports.direct.DirectSocket`)."""

    def send(self, frame: Frame) -> bool: ...

    @property
    def buffered(self) -> int: ...


class SlowConsumer(Exception):
    """The client does not read: its send queue overflowed."""


class Connection:
    """One WebSocket of a call: a bounded send queue drained by one writer.

    ``encode`` turns an output event into a frame (the connection's protocol
    state machine: formats differ per connection); ``send`` writes a frame.
    """

    def __init__(
        self,
        encode: Callable[[Event], Frame | list[Frame] | None],
        send: Callable[[Frame], Awaitable[None]],
        max_queued_bytes: int,
    ) -> None:
        self.encode = encode
        self._send = send
        self._queue: deque[Frame] = deque()
        self._queued = 0
        self._max = max_queued_bytes
        self._wakeup = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self._sending: asyncio.Task[None] | None = None
        self._socket: DirectWriter | None = None

    def use(self, socket: DirectWriter) -> None:
        """Write frames straight to ``socket`` from now on, in the caller's own call.

        No queue and no writer task per frame; what the socket's transport has
        not yet handed to the kernel counts against the same bound (then 4508).
        """
        self._socket = socket
        self._wakeup.set()  # the writer sends what was queued before

    def deliver(self, event: Event) -> None:
        frame = self.encode(event)
        if isinstance(frame, list):
            for one in frame:
                self.put(one)
        elif frame is not None:
            self.put(frame)

    def put(self, frame: Frame) -> None:
        if self.closed or self.overflowed:
            return
        socket = self._socket
        if socket is not None and not self._queue:
            if socket.buffered + len(frame) > self._max:
                self.overflowed = True
                self._wakeup.set()
            else:
                socket.send(frame)
            return
        self._queue.append(frame)
        self._queued += len(frame)
        if self._queued > self._max:
            self.overflowed = True
            if self._sending is not None:
                # The writer is stuck in a send the client does not read: stop waiting.
                self._sending.cancel()
        self._wakeup.set()

    async def writer(self) -> None:
        """Send queued frames; return once closed and flushed. Raises :class:`SlowConsumer`."""
        queue = self._queue
        me = asyncio.current_task()
        while True:
            if self.overflowed:
                raise SlowConsumer("send queue overflowed")
            while queue:
                frame = queue.popleft()
                self._queued -= len(frame)
                if self._socket is not None:
                    self._socket.send(frame)
                    continue
                self._sending = me
                try:
                    await self._send(frame)
                except asyncio.CancelledError:
                    if me is None or not self._cut_off():
                        raise
                    me.uncancel()  # our own cancellation (see put): not the owner's
                    raise SlowConsumer("send queue overflowed") from None
                finally:
                    self._sending = None
            if self.closed:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def _cut_off(self) -> bool:
        """Did :meth:`put` cancel the send (the queue overflowed while it was stuck)?"""
        return self.overflowed

    async def flush(self) -> None:
        """Send what is still queued (after the writer stopped: a last word before closing)."""
        while self._queue and not self.overflowed:
            frame = self._queue.popleft()
            self._queued -= len(frame)
            if self._socket is not None:
                self._socket.send(frame)
            else:
                await self._send(frame)

    def close(self, *, flush: bool = True) -> None:
        """No more frames; the writer sends what is queued (``flush``) and returns."""
        if not flush:
            self._queue.clear()
            self._queued = 0
        self.closed = True
        self._wakeup.set()


class Call:
    """One call, across its connections."""

    def __init__(
        self, port: SessionPort, pipeline: str, resume_token: str, window_s: float
    ) -> None:
        self.port = port
        self.pipeline = pipeline
        self.resume_token = resume_token
        self.window_s = window_s
        self.connection: Connection | None = None
        # Output held for a reconnect and each one's audio duration (two deques, not one
        # of wrapper objects: events are not tracked by the GC, wrappers would be).
        self._held: deque[Event] = deque()
        self._held_durations: deque[float] = deque()
        self._held_ms = 0.0
        self._evicted_pos: tuple[int, int] = (0, 0)
        self._evicted = 0
        self._attached = asyncio.Event()
        self._gone = asyncio.Event()
        self._gone.set()
        self.ended = False
        self.on_event: Callable[[Event], None] = lambda _: None
        #: Where the session's drop counters go (the server's metrics).
        self.drops = DropExport(None)

    @property
    def session_id(self) -> str:
        return self.port.session_id

    def missed(self, last_pos: tuple[int, int] | None) -> int:
        """How many output events above ``last_pos`` are no longer held.

        Positions of one incarnation are consecutive and every one reaches the call,
        so within it this is exact; across incarnations, every event evicted since.
        """
        if last_pos is None or self._evicted_pos <= tuple(last_pos):
            return 0
        if self._evicted_pos[0] == last_pos[0]:
            return self._evicted_pos[1] - last_pos[1]
        return self._evicted

    def attach(self, connection: Connection, last_pos: tuple[int, int] | None) -> None:
        """Make ``connection`` the live one; resend what it has not received."""
        old = self.connection
        if old is not None:
            old.close(flush=False)  # taken over: its socket is closed with 4409
        self.connection = connection
        self._gone.clear()
        self._attached.set()
        if last_pos is None:
            return
        for event in self._held:
            if (event.inc, event.pos) > tuple(last_pos):
                connection.deliver(event)

    def detach(self, connection: Connection) -> None:
        """``connection`` is gone (if it is still the live one, the window starts)."""
        connection.close()
        if self.connection is connection:
            self.connection = None
            self._attached.clear()
            self._gone.set()

    async def run(self) -> None:
        """Pump the session's output to the live connection; end on session end or timeout."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._expire())
                self.port.listen(self._output)  # delivered in the session's own call
                async for event in self.port.output():
                    self._output(event)  # (a port that does not listen)
                raise _SessionEnded
        except* _SessionEnded:
            pass
        finally:
            self.ended = True
            conn = self.connection
            if conn is not None:
                conn.close()
            await self.port.close("call_ended")

    def _output(self, event: Event) -> None:
        self._hold(event)
        self.on_event(event)
        conn = self.connection
        if conn is not None:
            conn.deliver(event)

    async def _expire(self) -> None:
        """End the call when no connection has been live for the resume window."""
        while True:
            await self._gone.wait()
            try:
                await asyncio.wait_for(self._attached.wait(), self.window_s)
            except TimeoutError:
                log.info("call %s: no reconnect within %.0f s", self.session_id, self.window_s)
                raise _SessionEnded from None

    def _hold(self, event: Event) -> None:
        if not event.pos:
            return
        ms = getattr(event, "duration_ns", 0) / 1e6
        held, durations = self._held, self._held_durations
        held.append(event)
        durations.append(ms)
        self._held_ms += ms
        while held and (self._held_ms > REPLAY_AUDIO_S * 1000 or len(held) > REPLAY_MAX_EVENTS):
            old = held.popleft()
            self._held_ms -= durations.popleft()
            self._evicted_pos = (old.inc, old.pos)
            self._evicted += 1


class _SessionEnded(Exception):
    pass


class CallRegistry:
    """Every call of a server, owned by its task group."""

    def __init__(
        self,
        host: SessionHost,
        auth: Auth,
        metrics: ServerMetrics,
        *,
        window_s: float = 30.0,
        transport: str = "websocket",
    ) -> None:
        self.host = host
        self.auth = auth
        self.metrics = metrics
        self.window_s = window_s
        self.transport = transport
        self.calls: dict[str, Call] = {}
        self._group: asyncio.TaskGroup | None = None

    def bind(self, group: asyncio.TaskGroup) -> None:
        """The task group that owns the calls (the server's lifespan)."""
        self._group = group

    async def open(self, pipeline: str) -> Call:
        if self._group is None:
            raise RuntimeError("the registry is not bound to a task group")
        port = await self.host.open(pipeline)
        name = pipeline or self.host.pipelines[0]
        token = self.auth.resume_token(port.session_id, ttl_s=24 * 3600)
        return self._start(port, name, token)

    def _start(self, port: SessionPort, name: str, token: str) -> Call:
        assert self._group is not None
        call = Call(port, name, token, self.window_s)
        call.drops = self.metrics.drops()
        call.on_event = partial(self._observe, call)
        self.calls[port.session_id] = call
        self.metrics.active_calls.inc()
        self._group.create_task(self._run(call))
        return call

    async def resume(
        self,
        token: str,
        last_pos: tuple[int, int] | None = None,
        last_seq: tuple[int, int] | None = None,
    ) -> Call | None:
        """The call a resume token names: held here, or (a cluster's gateway) reattached.

        A call this server never held -- another gateway served it and died -- is
        taken up again if the host can (``reattach``), from the client's last position.
        """
        sid = self.auth.resumed_session(token)
        if not sid:
            return None
        call = self.calls.get(sid)
        if call is not None:
            return None if call.ended else call
        reattach = getattr(self.host, "reattach", None)
        if reattach is None or self._group is None:
            return None
        port = await reattach(sid, last_pos, last_seq)
        if port is None:
            return None
        call = self._start(port, getattr(port, "pipeline", "") or self.host.pipelines[0], token)
        log.info("call %s reattached here (its gateway is gone)", sid)
        return call

    async def _run(self, call: Call) -> None:
        outcome = "ended"
        try:
            await call.run()
        except Exception:
            outcome = "failed"
            log.exception("call %s failed", call.session_id)
        finally:
            call.drops.update(call.port.drops())
            self.calls.pop(call.session_id, None)
            self.metrics.active_calls.dec()
            self.metrics.calls.labels(self.transport, outcome).inc()

    def _observe(self, call: Call, event: Event) -> None:
        kind = event.kind
        m = self.metrics
        if kind == "turn.done":
            m.turns.labels("played").inc()
            call.drops.update(call.port.drops())  # at each reply's end, and the call's
        elif kind == "turn.interrupted":
            m.turns.labels("interrupted").inc()
            m.interrupts.inc()
            call.drops.update(call.port.drops())
        elif kind == "metrics" and getattr(event, "name", "") == "turn.latency":
            m.latency(getattr(event, "values", {}))
        elif kind == "error":
            m.errors.labels(getattr(event, "code", "") or "error").inc()
