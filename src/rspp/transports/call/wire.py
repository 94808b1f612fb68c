"""The call protocol's wire format (``docs/protocol.md``), shared by both ends.

A call is one WebSocket. **Text frames** are JSON objects with a ``kind``:
either a protocol message (``call.hello``, ``call.ready``, ``call.bye``,
``call.latency``: the structs below) or an ABI event in the ABI's JSON codec
(:class:`rspp.events.JsonCodec`). **Binary frames** are audio, never base64:
from the client, raw PCM16 little-endian in the format it announced; from the
server, one bot audio frame behind an 18-byte header (:data:`AUDIO_HEADER`)
that says which reply it belongs to, its output position and the words it
voices, so the client can report playback, drop it on a clear and deduplicate
it after a reconnect.

Everything here is pure: bytes in, values out, one error type
(:class:`WireError`, with the close code a server answers it with).
"""

from __future__ import annotations

import struct
from typing import Annotated, Final, Literal

import msgspec

from rspp.events import ABI_VERSION, Event, JsonCodec

__all__ = [
    "AUDIO_HEADER",
    "AUDIO_MAGIC",
    "PROTOCOL_VERSION",
    "AudioFormat",
    "AudioFrame",
    "Bye",
    "CallMessage",
    "Hello",
    "Latency",
    "Ready",
    "WireError",
    "decode_audio_frame",
    "decode_message",
    "encode_audio_frame",
    "encode_message",
]

#: The version of this protocol (``call.hello.protocol``). Bumped on any incompatible change.
PROTOCOL_VERSION: Final = 1
#: First byte of a server audio frame.
AUDIO_MAGIC: Final = 0x52  # "R"
#: magic u8, version u8, flags u16, turn u32, inc u32, pos u32, text length u16 (little-endian).
AUDIO_HEADER: Final = struct.Struct("<BBHIIIH")
_U32 = 2**32 - 1

SampleRate = Annotated[int, msgspec.Meta(ge=8000, le=96000)]


class WireError(ValueError):
    """A frame that breaks the protocol. ``code`` is the WebSocket close code for it."""

    def __init__(self, message: str, code: int = 4400) -> None:
        super().__init__(message)
        self.code = code


class AudioFormat(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """PCM16 little-endian, interleaved channels."""

    sample_rate: SampleRate = 16000
    channels: Annotated[int, msgspec.Meta(ge=1, le=2)] = 1
    encoding: Literal["pcm16"] = "pcm16"

    @property
    def bytes_per_ms(self) -> float:
        return self.sample_rate * self.channels * 2 / 1000


class Hello(msgspec.Struct, tag="call.hello", tag_field="kind", kw_only=True, frozen=True):
    """Client -> server, the first frame: who I am, what I speak, which call."""

    protocol: int
    abi: str = ABI_VERSION
    #: A static token or one issued by ``rspp token`` (browsers cannot set headers).
    token: str = ""
    #: The pipeline to run, when the server offers several ("" = its default).
    pipeline: str = ""
    #: The audio this client sends.
    input: AudioFormat = AudioFormat()
    #: The audio this client wants to receive.
    output: AudioFormat = AudioFormat()
    #: A resume token from an earlier ``call.ready``: continue that call.
    resume: str = ""
    #: The highest ``(inc, pos)`` this client received on that call (nothing at or below is resent).
    last_pos: tuple[int, int] | None = None
    #: The highest ``(inc, seq)`` of any event it received, text included: a gateway that
    #: takes the call up from the store resends no event at or below it.
    last_seq: tuple[int, int] | None = None


class Ready(msgspec.Struct, tag="call.ready", tag_field="kind", kw_only=True, frozen=True):
    """Server -> client, the answer to ``call.hello``: the call is live."""

    protocol: int = PROTOCOL_VERSION
    abi: str = ABI_VERSION
    session: str
    pipeline: str
    input: AudioFormat
    output: AudioFormat
    #: Present it in a later ``call.hello`` to continue this call after a dropped connection.
    resume_token: str
    #: How long after a dropped connection the call waits for the client to come back.
    resume_window_s: float
    #: How far ahead of real time the server sends bot audio (at most this much is buffered).
    lead_ms: float
    resumed: bool = False
    #: Output events the server no longer held when the client resumed (never resent).
    missed: int = 0


class Bye(msgspec.Struct, tag="call.bye", tag_field="kind", kw_only=True, frozen=True):
    """Either side: the call is over (the server closes the socket after sending it)."""

    reason: str = "bye"


class Latency(msgspec.Struct, tag="call.latency", tag_field="kind", kw_only=True, frozen=True):
    """Server -> client: one turn's latency breakdown as the server measured it (ms)."""

    turn: int
    values: dict[str, float] = {}


CallMessage = Hello | Ready | Bye | Latency

_CALL_KINDS = frozenset({"call.hello", "call.ready", "call.bye", "call.latency"})


class _Kind(msgspec.Struct):
    kind: str


_KIND = msgspec.json.Decoder(_Kind)
_MESSAGES = msgspec.json.Decoder(CallMessage)
_ENCODER = msgspec.json.Encoder()
_EVENTS = JsonCodec()


def decode_message(data: str | bytes) -> CallMessage | Event:
    """A text frame: a protocol message or an ABI event (unknown kinds: ``UnknownEvent``)."""
    try:
        kind = _KIND.decode(data).kind
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireError(f"not a JSON object with a kind: {exc}") from exc
    try:
        if kind in _CALL_KINDS:
            return _MESSAGES.decode(data)
        return _EVENTS.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise WireError(f"invalid {kind!r} message: {exc}") from exc


def encode_message(message: CallMessage | Event) -> str:
    """A text frame for a protocol message or an ABI event."""
    if isinstance(message, Event):
        return _EVENTS.encode(message).decode()
    return _ENCODER.encode(message).decode()


class AudioFrame(msgspec.Struct, frozen=True):
    """A server audio frame, decoded."""

    turn: int
    inc: int
    pos: int
    text: str
    pcm: bytes


def encode_audio_frame(turn: int, inc: int, pos: int, text: str, pcm: bytes) -> bytes:
    """A binary frame for one bot audio frame."""
    if not (0 <= turn <= _U32 and 0 <= inc <= _U32 and 0 <= pos <= _U32):
        raise WireError("turn, inc or pos out of the frame header's range", 1011)
    words = text.encode()
    if len(words) > 0xFFFF:
        words = words[:0xFFFF].decode(errors="ignore").encode()
    header = AUDIO_HEADER.pack(
        AUDIO_MAGIC, PROTOCOL_VERSION, 1 if words else 0, turn, inc, pos, len(words)
    )
    return b"".join((header, words, pcm))


def decode_audio_frame(data: bytes | bytearray | memoryview) -> AudioFrame:
    """Parse a server audio frame (the client's side)."""
    view = memoryview(data)
    if len(view) < AUDIO_HEADER.size:
        raise WireError("audio frame shorter than its header")
    magic, version, _flags, turn, inc, pos, n = AUDIO_HEADER.unpack_from(view)
    if magic != AUDIO_MAGIC or version != PROTOCOL_VERSION:
        raise WireError(f"not a version-{PROTOCOL_VERSION} audio frame")
    start = AUDIO_HEADER.size
    if len(view) < start + n or (len(view) - start - n) % 2:
        raise WireError("audio frame length does not match its header")
    try:
        text = bytes(view[start : start + n]).decode()
    except UnicodeDecodeError as exc:
        raise WireError("audio frame text is not UTF-8") from exc
    return AudioFrame(turn, inc, pos, text, bytes(view[start + n :]))
