"""Tests of the local OpenAI-compatible audio server, and a way to run it for other tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

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
