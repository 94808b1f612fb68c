"""Run an ASGI app on a real loopback socket for the length of a test.

``async with serving(app) as address:`` starts uvicorn (the server ``rspp
serve`` uses, with its WebSocket implementation) on a free port in the
running event loop, waits until it accepts connections and the app's lifespan
has started, and shuts it down -- lifespan included -- on exit. A real socket,
not an in-memory transport: close codes, HTTP refusals before the upgrade and
backpressure are what a client will see.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["free_port", "serving"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any, port: int | None = None, *, direct: bool = True) -> AsyncIterator[str]:
    """Serve ``app`` as ``rspp serve`` does; yields ``"127.0.0.1:PORT"``.

    ``direct=False``: uvicorn's plain ``websockets-sansio`` protocol (the call
    endpoint's ASGI path) instead of :class:`~rspp.transports.direct.DirectWebSocketProtocol`.
    """
    import uvicorn

    from rspp.transports.direct import uvicorn_options

    port = port or free_port()
    options = uvicorn_options() if direct else {"ws": "websockets-sansio"}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # it failed to start: say why
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
