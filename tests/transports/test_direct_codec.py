"""The direct mode's own frame codec, fuzzed against websockets' framing.

A :class:`DirectWebSocketProtocol` on a fake transport (what is around the
codec), its websockets connection past a real handshake, taken over by a
recording handler. Hypothesis makes a stream of client frames -- text and
binary messages of every length class, pings, sometimes a fragmented message
(which hands the connection to websockets' parser for good) -- masks them
with websockets' own serializer, cuts the bytes at random places (down to one
byte at a time) and feeds them in: every message must come out once, whole,
in order, and every ping must be answered with its pong.
"""

from __future__ import annotations

import asyncio
import os

import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader

from rspp.transports.direct import DirectSocket, DirectWebSocketProtocol

REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeTransport:
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed = False

    def on_open(self, socket: DirectSocket) -> None:
        self.socket = socket

    def on_message(self, text: str | None, data: bytes | None) -> None:
        self.messages.append(text if text is not None else data)  # type: ignore[arg-type]

    def on_closed(self) -> None:
        self.closed = True


def taken_over() -> tuple[DirectWebSocketProtocol, FakeTransport, Recorder]:
    config = uvicorn.Config(app=None, ws=DirectWebSocketProtocol, ws_max_size=1 << 20)  # type: ignore[arg-type]
    config.load()
    protocol = DirectWebSocketProtocol(config, ServerState(), {}, _loop=asyncio.new_event_loop())
    transport = FakeTransport()
    protocol.transport = transport  # type: ignore[assignment]
    conn = protocol.conn
    conn.receive_data(REQUEST)  # a real handshake: websockets' parser now reads frames
    (request,) = conn.events_received()
    conn.send_response(conn.accept(request))
    assert conn.state is State.OPEN
    conn.data_to_send()
    protocol.handshake_complete = True
    recorder = Recorder()
    protocol.take_over(recorder)
    assert protocol.fast
    return protocol, transport, recorder


def client_frames(frames: list[Frame]) -> bytes:
    """Frames as a client sends them (masked), by websockets' serializer."""
    return b"".join(f.serialize(mask=True, extensions=[]) for f in frames)


def server_frames(data: bytes) -> list[Frame]:
    """Parse what the server wrote, with websockets' parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as stop:
            frames.append(stop.value)
    return frames


sizes = st.sampled_from([0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000])
message = st.tuples(st.sampled_from(["text", "binary", "ping", "fragmented"]), sizes)


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(message, min_size=1, max_size=12), cuts=st.lists(st.integers(1, 5000)))
def test_every_message_comes_out_once_whole_in_order_however_the_bytes_are_cut(
    messages: list[tuple[str, int]], cuts: list[int]
) -> None:
    protocol, transport, recorder = taken_over()
    frames: list[Frame] = []
    expected: list[str | bytes] = []
    pings: list[bytes] = []
    for kind, size in messages:
        payload = os.urandom(size)
        if kind == "text":
            text = ("é" * size)[: max(0, size // 2)]
            frames.append(Frame(Opcode.TEXT, text.encode()))
            expected.append(text)
        elif kind == "binary":
            frames.append(Frame(Opcode.BINARY, payload))
            expected.append(payload)
        elif kind == "ping":
            data = payload[:125]
            frames.append(Frame(Opcode.PING, data))
            pings.append(data)
        else:
            half = size // 2
            frames.append(Frame(Opcode.BINARY, payload[:half], fin=False))
            frames.append(Frame(Opcode.CONT, payload[half:]))
            expected.append(payload)
    data = client_frames(frames)
    at = 0
    for cut in cuts:
        if at >= len(data):
            break
        protocol.data_received(data[at : at + cut])
        at += cut
    if at < len(data):
        protocol.data_received(data[at:])
    assert recorder.messages == expected
    pongs = [f.data for f in server_frames(bytes(transport.written)) if f.opcode is Opcode.PONG]
    assert pongs == pings
    assert not transport.closing


def test_what_the_server_writes_is_what_websockets_reads() -> None:
    protocol, transport, _ = taken_over()
    socket = DirectSocket(protocol)
    sent: list[str | bytes] = [
        "hé",
        b"",
        b"\x01" * 125,
        b"\x02" * 126,
        b"\x03" * 70_000,
        "x" * 65536,
    ]
    for frame in sent:
        assert socket.send(frame)
    frames = server_frames(bytes(transport.written))
    got = [f.data.decode() if f.opcode is Opcode.TEXT else f.data for f in frames]
    assert got == sent and all(f.fin for f in frames)


def test_invalid_utf8_closes_with_1007_and_an_unmasked_frame_with_1002() -> None:
    for bad, code in (
        (client_frames([Frame(Opcode.TEXT, b"\xff\xfe")]), 1007),
        (Frame(Opcode.BINARY, b"abc").serialize(mask=False, extensions=[]), 1002),
    ):
        protocol, transport, recorder = taken_over()
        protocol.data_received(bad)
        (close,) = server_frames(bytes(transport.written))
        assert close.opcode is Opcode.CLOSE
        assert int.from_bytes(close.data[:2], "big") == code
        assert transport.closing and recorder.messages == [] and recorder.closed


def test_an_oversized_frame_is_refused_by_websockets_with_1009() -> None:
    protocol, transport, recorder = taken_over()
    protocol.data_received(client_frames([Frame(Opcode.BINARY, b"\0" * ((1 << 20) + 1))]))
    (close,) = server_frames(bytes(transport.written))
    assert int.from_bytes(close.data[:2], "big") == 1009
    assert recorder.messages == []
