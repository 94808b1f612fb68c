"""The ``rspp.direct`` WebSocket mode, against a real uvicorn on a loopback port.

A tiny ASGI app accepts, optionally reads a few messages the ASGI way, then
takes the connection over: what it receives from then on comes from the
protocol's own ``data_received``, and it writes frames synchronously.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from rspp.testing.server import serving
from rspp.transports.call.calls import Connection, SlowConsumer
from rspp.transports.direct import DirectSocket, direct_of


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


class Echo:
    """Echoes each message back with its order; "boom" makes it raise."""

    def __init__(self) -> None:
        self.socket: DirectSocket | None = None
        self.got: list[str | bytes] = []
        self.closed = asyncio.Event()

    def on_open(self, socket: DirectSocket) -> None:
        assert not self.got or self.socket is None
        self.socket = socket

    def on_message(self, text: str | None, data: bytes | None) -> None:
        if text == "boom":
            raise RuntimeError("a handler bug")
        message = text if text is not None else data
        assert message is not None
        self.got.append(message)
        assert self.socket is not None
        self.socket.send(f"{len(self.got)}:{message!r}")

    def on_closed(self) -> None:
        self.closed.set()


def app(handlers: list[Echo], *, read_first: int = 0) -> Starlette:
    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        echo = Echo()
        handlers.append(echo)
        for _ in range(read_first):  # the ASGI way, as the call endpoint reads its hello
            message = await ws.receive()
            echo.got.append(message.get("text") or message.get("bytes") or b"")
        direct = direct_of(ws.scope)
        assert direct is not None
        direct["take_over"](echo)
        await echo.closed.wait()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def test_messages_go_straight_to_the_handler_in_order_with_those_queued_before() -> None:
    async def main() -> None:
        handlers: list[Echo] = []
        async with serving(app(handlers, read_first=1)) as address:
            async with websockets.connect(f"ws://{address}/ws") as ws:
                # Sent back to back: what arrives while the app still reads the ASGI way
                # waits in uvicorn's queue and must come first, once, in order.
                for i in range(20):
                    await ws.send(f"m{i}")
                await ws.send(b"\x01\x02")
                replies = [await ws.recv() for _ in range(20)]
            assert replies[0] == "2:'m1'" and replies[-1] == "21:b'\\x01\\x02'"
            (echo,) = handlers
            assert echo.got == [f"m{i}" for i in range(20)] + [b"\x01\x02"]
            await asyncio.wait_for(echo.closed.wait(), 5)  # the client's close reached it

    run(main())


def test_a_handler_that_raises_closes_only_its_own_connection_with_1011() -> None:
    async def main() -> None:
        handlers: list[Echo] = []
        async with serving(app(handlers)) as address:
            async with (
                websockets.connect(f"ws://{address}/ws") as good,
                websockets.connect(f"ws://{address}/ws") as bad,
            ):
                await bad.send("boom")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(bad.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
                await good.send("still here")
                assert await good.recv() == "1:'still here'"
            assert all(h.closed.is_set() for h in handlers)

    run(main())


def test_a_send_after_the_client_left_is_refused_not_raised() -> None:
    async def main() -> None:
        handlers: list[Echo] = []
        async with serving(app(handlers)) as address:
            async with websockets.connect(f"ws://{address}/ws") as ws:
                await ws.send("hi")
                await ws.recv()
            (echo,) = handlers
            await asyncio.wait_for(echo.closed.wait(), 5)
            assert echo.socket is not None and echo.socket.send(b"late") is False

    run(main())


def test_without_the_extension_the_app_sees_none() -> None:
    # uvicorn's plain protocol (and any other ASGI server) does not offer it.
    seen: list[Any] = []

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        seen.append(direct_of(ws.scope))
        await ws.close()

    async def main() -> None:
        plain = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
        async with (
            serving(plain, direct=False) as address,
            websockets.connect(f"ws://{address}/ws") as ws,
        ):
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert seen == [None]

    run(main())


class SlowSocket:
    """A direct socket whose peer stopped reading: what is written stays buffered."""

    def __init__(self) -> None:
        self.buffered = 0
        self.sent: list[str | bytes] = []

    def send(self, frame: str | bytes) -> bool:
        self.sent.append(frame)
        self.buffered += len(frame)
        return True


def test_a_direct_connection_whose_client_does_not_read_is_cut_off() -> None:
    async def main() -> None:
        async def never(frame: str | bytes) -> None:
            raise AssertionError("a direct connection does not send through the queue")

        connection = Connection(lambda ev: None, never, max_queued_bytes=10_000)
        socket = SlowSocket()
        connection.put("queued before the take-over")
        connection.use(socket)
        writer = asyncio.create_task(connection.writer())
        await asyncio.sleep(0)  # the writer sends what was queued, then frames go straight out
        for _ in range(100):
            connection.put(b"\0" * 640)
        assert not connection._queue
        with pytest.raises(SlowConsumer):
            await asyncio.wait_for(writer, 5)
        assert socket.sent[0] == "queued before the take-over"
        assert 10_000 - 640 < socket.buffered <= 10_000  # written up to the bound, not past it

    run(main())
