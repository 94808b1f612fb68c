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

Frames. Once taken over (right after the upgrade, when no frame can have
arrived yet), the protocol parses the common case itself: a whole, masked,
unfragmented text or binary frame without extension bits is unmasked with
websockets' C ``apply_mask`` and handed over, and frames are written with a
two-to-ten-byte header of our own -- websockets' generator-based parser and
serializer were a quarter of a call's CPU. Anything else (a ping, a close, a
fragment, a compressed or unmasked frame, one over ``ws_max_size``) switches
that connection, from that frame on, to websockets' parser, which handles it
as the RFC says (the close handshake, a 1002 or 1009 close); it stays there.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships in websockets' wheels
    from websockets.utils import apply_mask

__all__ = [
    "EXTENSION",
    "DirectHandler",
    "DirectSocket",
    "DirectWebSocketProtocol",
    "direct_of",
    "uvicorn_options",
]

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
        if p.fast:
            payload = frame if isinstance(frame, bytes) else frame.encode()
            size = len(payload)
            first = 0x82 if isinstance(frame, bytes) else 0x81  # FIN + binary / text
            if size < 126:
                header = bytes((first, size))
            elif size < 65536:
                header = _HEADER_16.pack(first, 126, size)
            else:
                header = _HEADER_64.pack(first, 127, size)
            p.transport.write(header + payload)
            return True
        try:
            if isinstance(frame, bytes):
                p.conn.send_binary(frame)
            else:
                p.conn.send_text(frame.encode())
        except InvalidState:
            return False
        p.transport.write(b"".join(p.conn.data_to_send()))
        return True

    def abort(self) -> None:
        """Drop the connection now, unsent data and all (a peer that does not read)."""
        self._protocol.transport.abort()

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
        #: Frames parsed and written here (see the module docstring), not by websockets.
        self.fast = False
        self._partial = bytearray()
        self._need = 0

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
        # At a frame boundary only if websockets holds no frame bytes (true right after
        # the upgrade); otherwise its parser keeps the connection.
        self.fast = not self.conn.reader.buffer and self.queue.empty()
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

    def data_received(self, data: bytes) -> None:
        if not self.fast:
            super().data_received(data)
            return
        if self._partial:  # the rest of a frame: parse again once all of it is here
            self._partial += data
            if len(self._partial) < self._need:
                return
            data = bytes(self._partial)
            self._partial = bytearray()
        size = len(data)
        limit = self.config.ws_max_size
        i = 0
        while size - i >= 2 and self._direct is not None:
            first, second = data[i], data[i + 1]
            length = second & 0x7F
            at = i + 2
            if first not in _FAST or not second & 0x80:
                break  # not a whole masked data frame, ping or pong without extension bits
            if length >= 126:  # a 2-byte (126) or 8-byte (127) extended length follows
                extra = 2 if length == 126 else 8
                if size - at < extra:
                    self._keep(data, i, at + extra)
                    return
                length = int.from_bytes(data[at : at + extra], "big")
                at += extra
            if length > limit or (first >= 0x89 and length > 125):
                break  # too large (control frames carry at most 125 bytes)
            end = at + 4 + length
            if end > size:
                self._keep(data, i, end)
                return
            payload = apply_mask(data[at + 4 : end], data[at : at + 4])
            i = end
            if first == 0x82:
                self._deliver(None, payload)
                continue
            if first != 0x81:  # a ping or a pong
                if first == 0x89:
                    self.transport.write(bytes((0x8A, length)) + payload)  # the pong
                else:
                    self.handle_pong(Frame(Opcode.PONG, payload))  # uvicorn's keepalive
                continue
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self.fast = False
                self.conn.send_close(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
            self._deliver(text, None)
        else:
            if i < size and self._direct is not None:
                self._keep(data, i, i + 2)
            return
        # Anything else: websockets' parser from this frame on, for good.
        self.fast = False
        super().data_received(data[i:])

    def _keep(self, data: bytes, start: int, need: int) -> None:
        """Hold the incomplete frame at ``start``; it is parsed again at ``need`` bytes."""
        self._partial = bytearray(data[start:])
        self._need = need - start

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


#: First bytes (FIN, no extension bits) of the frames parsed here: text, binary, ping, pong.
_FAST = frozenset({0x81, 0x82, 0x89, 0x8A})
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def uvicorn_options() -> dict[str, Any]:
    """How ``rspp serve`` runs uvicorn: this protocol; no per-message deflate (PCM hardly
    compresses, deflating costs both ends CPU, and a compressed frame would take the
    connection to websockets' parser); asyncio's loop even where uvloop is installed
    (at 400 calls uvloop cost ~10 % more CPU per call: ``BENCHMARKS.md``, transport)."""
    return {"ws": DirectWebSocketProtocol, "ws_per_message_deflate": False, "loop": "asyncio"}


def direct_of(scope: Any) -> Any:
    """The ``rspp.direct`` extension of an ASGI scope, or None."""
    extensions = scope.get("extensions") or {}
    return extensions.get(EXTENSION)
