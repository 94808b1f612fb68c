"""Tests of the local OpenAI-compatible audio server; servers for other tests: the real one
(:func:`audio_server`) and a scripted one that misbehaves on cue (:class:`FakeServer`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette

from rspp.serve.openai_audio import create_app


@dataclass(frozen=True)
class RunningServer:
    app: Starlette
    base_url: str  # ends with /v1


@contextlib.contextmanager
def audio_server(timeout_s: float = 60.0) -> Iterator[RunningServer]:
    """``rspp serve-audio`` under uvicorn in a thread, on a free port of 127.0.0.1."""
    app = create_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="serve-audio", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the audio server did not start")
            time.sleep(0.02)
        yield RunningServer(app, f"http://127.0.0.1:{port}/v1")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --------------------------------------------------------------------------- a scripted server
# For the rules of the HTTP clients: it misbehaves at the byte level on cue.


@dataclass
class Seen:
    """One request the scripted server received."""

    line: str
    headers: dict[str, str]
    body: bytes
    #: Set when the client closed the connection while the server was waiting on it.
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self) -> Any:
        return json.loads(self.body)


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Seen], Awaitable[None]]


class FakeServer:
    """An HTTP/1.1 server that answers the n-th request with the n-th behaviour (the last
    one repeats). Every answer closes its connection."""

    def __init__(self, *behaviours: Behaviour) -> None:
        self.behaviours = behaviours
        self.requests: list[Seen] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = Seen(head[0], headers, body)
            self.requests.append(seen)
            behaviour = self.behaviours[min(len(self.requests), len(self.behaviours)) - 1]
            await behaviour(reader, writer, seen)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} X",
        "connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _wait_for_close(reader: asyncio.StreamReader, seen: Seen) -> None:
    """Stall until the client hangs up."""
    try:
        while await reader.read(1024):
            pass
    except ConnectionError:
        pass
    seen.closed.set()


def respond(
    status: int, body: bytes | dict[str, Any], *, ctype: str = "application/json", **headers: str
) -> Behaviour:
    data = json.dumps(body).encode() if isinstance(body, dict) else body

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        all_headers = {"content-type": ctype, "content-length": str(len(data)), **headers}
        writer.write(_head(status, {k.replace("_", "-"): v for k, v in all_headers.items()}))
        writer.write(data)
        await writer.drain()

    return run


def stream(chunks: list[bytes], *, gap_s: float = 0.0, then: str = "end") -> Behaviour:
    """A chunked 200 of audio; then ``end``, ``stall`` (until the client leaves) or ``drop``."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        writer.write(_head(200, {"content-type": "audio/pcm", "transfer-encoding": "chunked"}))
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            await asyncio.sleep(gap_s)
        if then == "end":
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        elif then == "stall":
            await _wait_for_close(reader, seen)

    return run


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
    await _wait_for_close(reader, seen)


def error(status: int, message: str, **headers: str) -> Behaviour:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return respond(status, body, **headers)


def tone(ms: int, rate: int = 24000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
