"""uvicorn's sans-I/O WebSocket protocol with a direct mode for the call path.

Under ASGI every message a client sends goes through a queue to the app's
``receive()`` (a task switch per message, and uvicorn pauses and resumes the
socket's reading around each one), and every frame sent goes through
``send()`` (a coroutine per frame, awaited by one more task). At 50 audio
frames a second each way that was most of a call's CPU in ``rspp serve``
(``BENCHMARKS.md``, the transport profile).

:class:`DirectWebSocketProtocol` is uvicorn's own ``websockets-sansio``
protocol (``uvicorn.Config(ws=DirectWebSocketProtocol)``) with one addition:
the ASGI scope of a WebSocket carries the extension ``"rspp.direct"``, whose
``take_over(handler)`` an app may call once it has accepted the connection.
The handler gets a :class:`DirectSocket` (``on_open``: synchronous ``send``),
then every message that was already queued for ``receive()``, then every
complete message as it arrives, from ``data_received`` (``on_message(text,
data)``: no queue, no task, no pause of reading), and ``on_closed()`` when the
client closes or goes away. The handshake, the close (``websocket.close`` through
ASGI), pings and every other path stay uvicorn's. An app that finds no such
extension (another server, the test client) keeps using plain ASGI.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

__all__ = ["EXTENSION", "DirectHandler", "DirectSocket", "DirectWebSocketProtocol", "direct_of"]

log = logging.getLogger("rspp.transports")

#: The ASGI scope extension's name.
EXTENSION = "rspp.direct"


class DirectHandler(Protocol):
    """What an app gives ``take_over``: called from the protocol, must not block or raise."""

    def on_open(self, socket: DirectSocket) -> None:
        """First of all (before any message): the socket to write to."""
        ...

    def on_message(self, text: str | None, data: bytes | None) -> None: ...

    def on_closed(self) -> None: ...


class DirectSocket:
    """The app's side of a taken-over WebSocket: synchronous writes."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol

    def send(self, frame: str | bytes) -> bool:
        """Write one message now; False if the connection is closing or gone."""
        p = self._protocol
        if p.close_sent or p.disconnected or p.transport.is_closing():
            return False
        try:
            if isinstance(frame, bytes):
                p.conn.send_binary(frame)
            else:
                p.conn.send_text(frame.encode())
        except InvalidState:
            return False
        p.transport.write(b"".join(p.conn.data_to_send()))
        return True

    def pause_reading(self) -> None:
        """Stop reading the socket (the app cannot take more input for now)."""
        p = self._protocol
        if not p.read_paused and not p.transport.is_closing():
            p.read_paused = True
            p.transport.pause_reading()

    def resume_reading(self) -> None:
        p = self._protocol
        if p.read_paused and not p.transport.is_closing():
            p.read_paused = False
            p.transport.resume_reading()

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel's socket buffer (a slow reader)."""
        return self._protocol.transport.get_write_buffer_size()


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, plus the ``rspp.direct`` extension."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: DirectHandler | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # upgraded (not refused before the app ran)
            scope["extensions"][EXTENSION] = {"take_over": self.take_over}

    def take_over(self, handler: DirectHandler) -> None:
        """Deliver messages to ``handler`` from now on (those already queued first)."""
        if not self.handshake_complete:
            raise RuntimeError("take over a WebSocket only after accepting it")
        self._direct = handler
        handler.on_open(DirectSocket(self))
        closed = False
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                self._deliver(message.get("text"), message.get("bytes"))
            elif message["type"] == "websocket.disconnect":
                closed = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if closed or self.disconnected:
            self._closed()

    def send_receive_event_to_app(self) -> None:
        if self._direct is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            self._deliver(text, None)
        else:
            self._deliver(None, data)

    def handle_close(self, event: Any) -> None:
        super().handle_close(event)
        self._closed()

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        self._closed()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._closed()

    def _deliver(self, text: str | None, data: bytes | None) -> None:
        handler = self._direct
        assert handler is not None
        try:
            handler.on_message(text, data)
        except Exception:  # a handler must not raise: contain it to this connection
            log.exception("direct WebSocket handler failed; closing the connection")
            self.conn.send_close(1011, "internal error")
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()
            self._closed()

    def _closed(self) -> None:
        handler, self._direct = self._direct, None
        if handler is not None:
            try:
                handler.on_closed()
            except Exception:
                log.exception("direct WebSocket handler failed on close")


def direct_of(scope: Any) -> Any:
    """The ``rspp.direct`` extension of an ASGI scope, or None."""
    extensions = scope.get("extensions") or {}
    return extensions.get(EXTENSION)
