"""A fake OpenAI-compatible chat server that misbehaves on purpose, one script per request.

It is a fake -- no model behind it -- but a real HTTP/1.1 server on a real
socket (127.0.0.1, a free port), written on ``asyncio.start_server`` rather
than a web framework so that a test can do what frameworks prevent: hang
before the status line, stall in the middle of a body, drop the connection
half-way through a chunk, write garbage. The client under test goes through
its whole stack (httpx, httpcore, sockets), and the server records what it
saw: every request (headers and body) and when a client hung up on it.

A test gives the server its scripts, coroutine functions that answer one
:class:`Exchange` each (the n-th request gets the n-th script; the last one
answers every further request)::

    async def reply(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("Hello")
        await ex.finish("stop")
        await ex.done()

    async with FakeServer(reply) as server:
        ...  # point a client at server.url

Streamed bodies use chunked transfer encoding, like real servers, so that a
dropped connection is visibly incomplete (and a complete one can be reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Exchange", "FakeServer", "Request", "Script", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    connection: int  # which connection (0, 1, ...) it came on

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Exchange:
    """One request and the means to answer it, well or badly."""

    server: FakeServer
    request: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: The response was finished properly: the connection may serve another request.
    complete: bool = False
    _chunked: bool = field(default=False, repr=False)

    # -- a well-formed answer --------------------------------------------------------------

    async def start(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        """Send the status line and headers of a streamed (chunked) body."""
        await self.head(
            status,
            {
                "content-type": "text/event-stream",
                "transfer-encoding": "chunked",
                **(headers or {}),
            },
        )
        self._chunked = True

    async def head(self, status: int, headers: Mapping[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        await self._write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def raw(self, data: bytes) -> None:
        """Write body bytes as they are (in a chunked body: as one chunk)."""
        if self._chunked and data:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        await self._write(data)

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self, text: str) -> None:
        """One line of the event stream (a field, a comment, or garbage)."""
        await self.raw(text.encode() + b"\n")

    async def event(self, data: str | Mapping[str, Any], *, name: str | None = None) -> None:
        """One SSE event; a mapping is sent as JSON (raw UTF-8, as vLLM writes it)."""
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        head = f"event: {name}\n" if name else ""
        await self.raw(f"{head}data: {text}\n\n".encode())

    async def delta(self, text: str) -> None:
        await self.event(chunk(delta={"content": text}))

    async def finish(self, reason: str = "stop", usage: Mapping[str, int] | None = None) -> None:
        await self.event(chunk(delta={}, finish_reason=reason))
        if usage is not None:
            await self.event({"object": "chat.completion.chunk", "choices": [], "usage": usage})

    async def done(self) -> None:
        """``data: [DONE]`` and the end of the body."""
        await self.event("[DONE]")
        await self.end()

    async def end(self) -> None:
        """End the chunked body properly (without ``[DONE]`` unless sent before)."""
        self._chunked = False
        await self._write(b"0\r\n\r\n")
        self.complete = True

    async def json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        """A whole JSON response (an error, typically)."""
        data = json.dumps(body).encode()
        await self.head(
            status,
            {
                "content-type": "application/json",
                "content-length": str(len(data)),
                **(headers or {}),
            },
        )
        await self._write(data)
        self.complete = True

    async def reply(self, *texts: str, reason: str = "stop") -> None:
        """A whole well-behaved streamed reply."""
        await self.start()
        for text in texts:
            await self.delta(text)
        await self.finish(reason)
        await self.done()

    # -- misbehaviour ----------------------------------------------------------------------

    def drop(self) -> None:
        """Drop the connection at once, whatever was half-sent."""
        self.writer.transport.abort()

    async def hang(self) -> None:
        """Send nothing more; return when the client hangs up (recorded by the server)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(4096):
                pass
        self.server.hung_up()

    async def trickle(self, interval_s: float, text: str = "la ") -> None:
        """Send a delta every ``interval_s`` until the client hangs up (a model that goes on)."""
        watcher = asyncio.ensure_future(self.hang())
        try:
            while not watcher.done():
                with contextlib.suppress(ConnectionError):
                    await self.delta(text)
                await asyncio.wait([watcher], timeout=interval_s)
        finally:
            watcher.cancel()


def chunk(**choice: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": "fake",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": None, **choice}],
    }


Script = Callable[[Exchange], Awaitable[None]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FakeServer:
    """The fake server: ``async with FakeServer(*scripts) as server`` serves on ``server.url``."""

    def __init__(self, *scripts: Script) -> None:
        assert scripts, "a FakeServer needs at least one script"
        self.scripts = scripts
        #: Every request received, in order.
        self.requests: list[Request] = []
        #: Connections accepted.
        self.connections = 0
        #: Loop times at which a client hung up on a script waiting for it (``hang``, ``trickle``).
        self.hangups: list[float] = []
        self.hangup = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def hung_up(self) -> None:
        self.hangups.append(asyncio.get_running_loop().time())
        self.hangup.set()

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        connection = self.connections
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader, connection)
                if request is None:
                    return
                index = len(self.requests)
                self.requests.append(request)
                script = self.scripts[min(index, len(self.scripts) - 1)]
                exchange = Exchange(self, request, reader, writer)
                await script(exchange)
                if not exchange.complete or writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # by __aexit__; asyncio would log a cancelled connection handler as an error
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._handlers.discard(task)


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Request | None:
    """The next request on a connection; None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    start, *fields = head.decode("latin-1").split("\r\n")
    method, path, _ = start.split(" ", 2)
    headers = {}
    for line in fields:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body, connection)
