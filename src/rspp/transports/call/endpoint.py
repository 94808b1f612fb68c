"""The call protocol's WebSocket endpoint: a thin shell around :class:`CallServer`.

Per connection: check the origin (before the upgrade), read the hello within
the handshake deadline, authenticate, open or resume the call, then run a
reader (frames -> the state machine -> the session port) and a writer (the
connection's bounded send queue -> the socket) under one task group. Whatever
a client sends, the worst it gets is its own connection closed with a code
from ``docs/protocol.md``; the call (for a resume) and every other call go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

from starlette.websockets import WebSocket, WebSocketDisconnect

from rspp.events import Error
from rspp.kernel import InvalidInput, Overloaded, SessionClosed
from rspp.transports.auth import origin_allowed
from rspp.transports.call.calls import Call, CallRegistry, Connection, Frame, SlowConsumer
from rspp.transports.call.server import (
    CallClosed,
    CallServer,
    Ended,
    Input,
    Limits,
    Played,
    Refused,
    Start,
)
from rspp.transports.call.wire import encode_message
from rspp.transports.direct import DirectSocket, direct_of
from rspp.transports.port import HostFull, SessionPort

__all__ = ["CallEndpoint", "EndpointConfig"]

log = logging.getLogger("rspp.transports")


@dataclass
class EndpointConfig:
    """The endpoint's settings (``rspp serve`` options)."""

    allowed_origins: Sequence[str] = ()
    hello_timeout_s: float = 10.0
    limits: Limits = field(default_factory=Limits)
    #: The send queue holds at most this much of the client's output audio (then 4508).
    send_queue_s: float = 2.0
    #: What ``call.ready`` announces as the lead; None: the pipeline's own (its audio output's
    #: ``lead_ms``, as the port reports it).
    lead_ms: float | None = None


class _Disconnected(Exception):
    pass


class CallEndpoint:
    """``/v1/call``: one instance per server, one :meth:`handle` per connection."""

    def __init__(self, registry: CallRegistry, config: EndpointConfig | None = None) -> None:
        self.registry = registry
        self.config = config or EndpointConfig()

    async def handle(self, ws: WebSocket) -> None:
        metrics = self.registry.metrics
        if not origin_allowed(
            ws.headers.get("origin"), ws.headers.get("host"), self.config.allowed_origins
        ):
            metrics.rejected.labels("origin").inc()
            await ws.close(code=4403)  # before accept: an HTTP 403
            return
        await ws.accept()
        proto = CallServer(self.config.limits)
        call: Call | None = None
        connection: Connection | None = None
        direct = direct_of(ws.scope)
        reader = _Reader(proto, self.registry.metrics)
        if direct is not None:
            # Taken over at once (nothing can have arrived since the upgrade): the
            # server's direct mode, the hello included.
            direct["take_over"](reader)
        try:
            receive = reader.first if direct is not None else partial(_receive, ws)
            call, connection = await self._handshake(ws, proto, receive)
            reader.start(call, connection)
            read = reader.run() if direct is not None else reader.pump(ws)
            await self._run(read, call, connection)
        except CallClosed as closed:
            metrics.closed.labels(str(closed.code)).inc()
            log.info("call connection closed: %s", closed)
            await _close(ws, closed.code, closed.reason, reader)
        except SlowConsumer:
            metrics.closed.labels("4508").inc()
            await _close(ws, 4508, "slow consumer: the send queue overflowed", reader)
        except (_Disconnected, WebSocketDisconnect):
            pass
        finally:
            proto.closed()
            if call is not None and connection is not None:
                call.detach(connection)

    async def _handshake(
        self,
        ws: WebSocket,
        proto: CallServer,
        receive: Callable[[], Awaitable[tuple[str | None, bytes | None]]],
    ) -> tuple[Call, Connection]:
        try:
            async with asyncio.timeout(self.config.hello_timeout_s):
                text, data = await receive()
        except TimeoutError:
            raise proto.refuse(4408, "no call.hello in time") from None
        now = time.monotonic()
        actions = proto.receive_text(text, now) if text is not None else []
        if data is not None:
            proto.receive_bytes(data, now)  # raises: audio before the hello
        start = actions[0]
        assert isinstance(start, Start)
        hello = start.hello
        registry = self.registry
        header = ws.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if hello.resume:
            try:
                call = await registry.resume(hello.resume, hello.last_pos, hello.last_seq)
            except SessionClosed as exc:  # cannot tell now (a cluster's store is away)
                raise proto.refuse(4503, f"try again: {exc}") from exc
            if call is None:
                raise proto.refuse(4404, "no such call (unknown resume token, or the call ended)")
        else:
            if not registry.auth.check(token or hello.token):
                raise proto.refuse(4401, "a valid token is needed")
            host = registry.host
            if not host.ready:
                raise proto.refuse(4503, "not ready: the models are loading")
            if hello.pipeline and hello.pipeline not in host.pipelines:
                raise proto.refuse(4400, f"no pipeline {hello.pipeline!r} here")
            try:
                call = await registry.open(hello.pipeline)
            except HostFull as exc:
                raise proto.refuse(4503, f"full: {exc}") from exc
            except SessionClosed as exc:
                raise proto.refuse(4503, str(exc)) from exc
        fmt = hello.output
        queue_bytes = max(int(fmt.bytes_per_ms * 1000 * self.config.send_queue_s), 64 * 1024)

        async def send(frame: Frame) -> None:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame)

        connection = Connection(proto.encode, send, queue_bytes)
        last_pos = hello.last_pos if hello.resume else None
        missed = call.missed(last_pos)
        connection.put(
            proto.ready(
                session=call.session_id,
                pipeline=call.pipeline,
                pipeline_rate=call.port.sample_rate,
                resume_token=call.resume_token,
                resume_window_s=call.window_s,
                lead_ms=call.port.lead_ms if self.config.lead_ms is None else self.config.lead_ms,
                resumed=bool(hello.resume),
                missed=missed,
            )
        )
        call.attach(connection, last_pos)
        if missed:
            log.info("call %s resumed; some held output was already gone", call.session_id)
        return call, connection

    async def _run(
        self, read: Coroutine[Any, Any, NoReturn], call: Call, connection: Connection
    ) -> None:
        # Two tasks owned here: whichever ends first ends the connection.
        reader = asyncio.create_task(read)
        writer = asyncio.create_task(connection.writer())
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if isinstance(exc, CallClosed) and exc.code == 1000:
                async with asyncio.timeout(1.0):
                    await connection.flush()  # the bye, and what came before it
            if exc is not None:
                raise exc
        # The writer returned: the connection was closed by the call.
        if call.ended:
            raise CallClosed(1000, "the call has ended")
        raise CallClosed(4409, "another connection took over this call")


class _Reader:
    """A connection's input: each message handled as it arrives.

    In the server's direct mode the protocol hands it every message from its own
    call (:meth:`on_message`); the hello goes to the handshake (:meth:`first`) and
    what arrives while the call is being opened waits, in order, for
    :meth:`start`. Under plain ASGI, :meth:`pump` reads the messages instead.
    What cannot be done at once -- a push the session refuses for now
    (backpressure), the end of the call -- is left to :meth:`settle`, in order:
    while anything waits, later actions wait behind it and reading stops (the
    direct socket's is paused; :meth:`pump` does not read on until it is done).
    """

    def __init__(self, proto: CallServer, metrics: Any) -> None:
        self.proto = proto
        self.metrics = metrics
        self._port: SessionPort | None = None
        self._connection: Connection | None = None
        self.socket: DirectSocket | None = None
        self._hello: asyncio.Future[tuple[str | None, bytes | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._early: list[tuple[str | None, bytes | None]] = []
        self._waiting: deque[Input | Ended] = deque()
        self._failure: BaseException | None = None
        self._attention = asyncio.Event()

    async def first(self) -> tuple[str | None, bytes | None]:
        """The first message (the hello)."""
        return await self._hello

    def start(self, call: Call, connection: Connection) -> None:
        """The call is open: write to the socket, handle what arrived meanwhile."""
        self._port = call.port
        self._connection = connection
        if self.socket is not None:
            connection.use(self.socket)
        early, self._early = self._early, []
        for text, data in early:
            self.on_message(text, data)
        if self.socket is not None and not self._waiting:
            self.socket.resume_reading()

    @property
    def port(self) -> SessionPort:
        assert self._port is not None
        return self._port

    @property
    def connection(self) -> Connection:
        assert self._connection is not None
        return self._connection

    # -- from the protocol (must not raise) ------------------------------------------------

    def on_open(self, socket: DirectSocket) -> None:
        self.socket = socket

    def on_message(self, text: str | None, data: bytes | None) -> None:
        if self._failure is not None:
            return
        if self._port is None:  # the call is not open yet
            if not self._hello.done():
                self._hello.set_result((text, data))
                return
            self._early.append((text, data))
            if len(self._early) >= 64 and self.socket is not None:
                self.socket.pause_reading()  # until start()
            return
        now = time.monotonic()
        try:
            actions = (
                self.proto.receive_text(text, now)
                if text is not None
                else self.proto.receive_bytes(data or b"", now)
            )
        except CallClosed as closed:  # a fatal protocol error of the client's
            self._fail(closed)
            return
        for action in actions:
            if self._waiting and isinstance(action, (Input, Ended)):
                self._waiting.append(action)
                continue
            if isinstance(action, Input):
                self._push(action)
            elif isinstance(action, Played):
                self.port.report_playback(action.turn, action.played_ms)
            elif isinstance(action, Refused):
                self.metrics.rejected.labels(action.code).inc()
                self.connection.put(_error(action.code, action.message))
            elif isinstance(action, Ended):
                self._waiting.append(action)
                self._attention.set()

    def on_closed(self) -> None:
        if not self._hello.done():
            self._hello.set_exception(_Disconnected())
        self._fail(_Disconnected())

    def _push(self, action: Input) -> None:
        try:
            self.port.push_nowait(action.event)
        except Overloaded:
            self._waiting.append(action)  # run() waits for room; later input waits behind
            self._attention.set()
            if self.socket is not None:
                self.socket.pause_reading()
        except InvalidInput as exc:
            self.metrics.rejected.labels("invalid_input").inc()
            self.connection.put(_error("invalid_input", str(exc)))
        except SessionClosed:
            self._fail(CallClosed(1000, "the call has ended"))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._attention.set()

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> NoReturn:
        """Direct mode: settle whatever the protocol's calls left waiting."""
        while True:
            await self._attention.wait()
            self._attention.clear()
            await self.settle()

    async def pump(self, ws: WebSocket) -> NoReturn:
        """Plain ASGI: read the messages, settling each before the next is read."""
        while True:
            text, data = await _receive(ws)
            self.on_message(text, data)
            await self.settle()

    async def settle(self) -> None:
        """Do what waits, in order; raise what ended the connection."""
        waiting = self._waiting
        while waiting and self._failure is None:
            action = waiting[0]
            if isinstance(action, Ended):
                self.connection.put(self.proto.bye(action.reason))
                await self.port.close("client_bye")
                raise CallClosed(1000, "bye")
            try:
                await self.port.push(action.event)
            except InvalidInput as exc:
                self.metrics.rejected.labels("invalid_input").inc()
                self.connection.put(_error("invalid_input", str(exc)))
            except SessionClosed:
                raise CallClosed(1000, "the call has ended") from None
            waiting.popleft()
        if self._failure is not None:
            raise self._failure
        if self.socket is not None:
            self.socket.resume_reading()


async def _receive(ws: WebSocket) -> tuple[str | None, bytes | None]:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise _Disconnected
    return message.get("text"), message.get("bytes")


#: How long a close may wait for a client to take it (one that does not read never does).
CLOSE_TIMEOUT_S = 2.0


async def _close(ws: WebSocket, code: int, reason: str, reader: _Reader | None = None) -> None:
    """Close with ``code``; a client that does not take the close within
    :data:`CLOSE_TIMEOUT_S` is cut off (its socket aborted, in direct mode)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):  # gone
                await ws.close(code=code, reason=reason)
    except TimeoutError:
        log.info("call connection: the client did not take the close (%d); cut off", code)
        if reader is not None and reader.socket is not None:
            reader.socket.abort()


def _error(code: str, message: str) -> str:
    return encode_message(Error(source="transport", code=code, message=message))
