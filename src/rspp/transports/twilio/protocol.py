"""The server side of Twilio's bidirectional Media Streams protocol, sans I/O.

Everything that decides what a Twilio stream means lives here: feed
:meth:`MediaStream.receive` each text frame Twilio sent and get one typed
event back; ask :meth:`MediaStream.send_audio` and :meth:`MediaStream.clear`
for the frames to send. No sockets, no clock, no session: the ASGI endpoint
(:mod:`rspp.transports.twilio.endpoint`) is a thin shell that moves frames.

The wire (Twilio's "Media Streams - WebSocket Messages"): every message is a
JSON text frame with an ``event``.

* From Twilio: ``connected`` (first; ``protocol``, ``version``), ``start``
  (once; ``start.streamSid``, ``callSid``, ``accountSid``, ``tracks``,
  ``customParameters``, ``mediaFormat`` = audio/x-mulaw, 8000 Hz, 1 channel),
  ``media`` (``media.track``, ``chunk``, ``timestamp`` -- ms since the stream
  started -- and ``payload``, base64 μ-law), ``dtmf`` (``dtmf.digit``,
  ``dtmf.track``), ``mark`` (``mark.name``), ``stop`` (last). Numbers such as
  ``sequenceNumber``, ``chunk`` and ``timestamp`` arrive as strings.
* To Twilio: ``media`` (``streamSid``, ``media.payload``: audio Twilio buffers
  and plays in order), ``mark`` (``streamSid``, ``mark.name``) and ``clear``
  (``streamSid``).

Theory of operation
-------------------
**Sequence.** The stream's states and the inbound events each allows are a
table (:data:`TRANSITIONS`). ``connected`` is informational: a peer that goes
straight to ``start`` is served. Anything else out of order (media before
``start``, a second ``start``, anything after ``stop``), malformed JSON,
an unknown ``event``, a bad field or garbage base64 raises
:class:`ProtocolError` and leaves the state as it was: one bad frame costs
that frame, never the call. Unknown fields are ignored (Twilio adds some).

**Marks are the playback clock.** Twilio echoes a ``mark`` "when the audio
that you have sent has been completed (or if there is no audio buffered)", in
the order they were sent. After each batch of audio we send a mark and
remember the total audio of that reply sent up to it, so its echo means "the
caller has played ``played_ms`` of turn ``turn``": :class:`Played`, which the
endpoint hands to ``port.report_playback``. The name encodes turn and
position for people reading Twilio's logs, but it is only *looked up*, never
parsed, so a peer cannot make us count audio we did not send.

**Marks after a clear.** ``clear`` "empties all buffered audio and causes any
mark messages to be sent back" -- at once, whether or not their audio played.
So an echo that arrives after we sent ``clear``, for a mark sent before it,
says nothing about playback: it is reported as :class:`MarkCleared` and never
counted. This is conservative: the one mark whose audio did finish while the
``clear`` was on its way to Twilio is not counted either, so "heard" may fall
short by one batch, but it never claims audio the caller did not hear. Marks
sent after the ``clear`` count as usual.

**After a clear, nothing of the cleared replies goes out.** :meth:`clear`
names the reply (``turn``) being cleared, as ``control.clear_buffer`` does:
audio of that turn or older asked for later is dropped here (the kernel
fences it too; this is the transport's own guarantee). A ``clear`` is not
sent when everything Twilio still holds belongs to newer replies (it would
cut the new reply, not the old one).
"""

from __future__ import annotations

import base64
import binascii
import enum
import itertools
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec

__all__ = [
    "MAX_PENDING_MARKS",
    "TRANSITIONS",
    "Connected",
    "Dtmf",
    "MarkCleared",
    "Media",
    "MediaStream",
    "Played",
    "ProtocolError",
    "Start",
    "State",
    "Stop",
    "TwilioEvent",
]


class ProtocolError(ValueError):
    """A frame that breaks the protocol. ``reason`` is a short code to count it by."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class State(enum.Enum):
    IDLE = "idle"  # the socket is open, nothing received
    CONNECTED = "connected"  # `connected` received
    STARTED = "started"  # `start` received: audio flows both ways
    STOPPED = "stopped"  # `stop` received: the stream is over


#: (state, inbound event) -> the next state. What is not here is a ProtocolError.
TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (State.IDLE, "connected"): State.CONNECTED,
    (State.IDLE, "start"): State.STARTED,
    (State.CONNECTED, "start"): State.STARTED,
    (State.STARTED, "media"): State.STARTED,
    (State.STARTED, "dtmf"): State.STARTED,
    (State.STARTED, "mark"): State.STARTED,
    (State.STARTED, "stop"): State.STOPPED,
}

#: Marks kept waiting for their echo: ten minutes of 20 ms batches, the most audio Twilio
#: buffers. A peer that never echoes cannot grow this without bound; the oldest marks are
#: forgotten first (never counted: under-counting is the safe side).
MAX_PENDING_MARKS: Final = 30_000

_DIGIT = re.compile(r"[0-9*#A-D]")
_T = TypeVar("_T")

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int

    @property
    def mulaw_8k(self) -> bool:
        """Whether the audio is what this transport speaks (Twilio's only format today)."""
        return (self.encoding, self.sample_rate, self.channels) == ("audio/x-mulaw", 8000, 1)


@dataclass(frozen=True, slots=True)
class Media:
    """Caller (``inbound``) or bot (``outbound``) audio: μ-law bytes, base64 decoded."""

    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    track: str


@dataclass(frozen=True, slots=True)
class Played:
    """An echoed mark that counts: the caller has played ``played_ms`` of reply ``turn``."""

    turn: int
    played_ms: float
    name: str


@dataclass(frozen=True, slots=True)
class MarkCleared:
    """An echoed mark for audio a ``clear`` dropped: not evidence of playback."""

    turn: int
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    account_sid: str
    call_sid: str


TwilioEvent = Connected | Start | Media | Dtmf | Played | MarkCleared | Stop

# --------------------------------------------------------------------------- the wire


class _MediaFormat(msgspec.Struct, rename="camel"):
    encoding: str = ""
    sample_rate: int = 0
    channels: int = 0


class _StartBody(msgspec.Struct, rename="camel"):
    stream_sid: str
    account_sid: str = ""
    call_sid: str = ""
    tracks: list[str] = []
    custom_parameters: dict[str, str] = {}
    media_format: _MediaFormat = msgspec.field(default_factory=_MediaFormat)


class _MediaBody(msgspec.Struct):
    payload: str
    track: str = "inbound"
    chunk: int = 0
    timestamp: int = 0


class _DtmfBody(msgspec.Struct):
    digit: str
    track: str = "inbound_track"


class _MarkBody(msgspec.Struct):
    name: str


class _StopBody(msgspec.Struct, rename="camel"):
    account_sid: str = ""
    call_sid: str = ""


class _In(msgspec.Struct, tag_field="event", rename="camel"):
    stream_sid: str | None = None


class _InConnected(_In, tag="connected"):
    protocol: str = ""
    version: str = ""


class _InStart(_In, tag="start"):
    start: _StartBody | None = None


class _InMedia(_In, tag="media"):
    media: _MediaBody | None = None


class _InDtmf(_In, tag="dtmf"):
    dtmf: _DtmfBody | None = None


class _InMark(_In, tag="mark"):
    mark: _MarkBody | None = None


class _InStop(_In, tag="stop"):
    stop: _StopBody = msgspec.field(default_factory=_StopBody)


_Inbound = _InConnected | _InStart | _InMedia | _InDtmf | _InMark | _InStop
_KNOWN = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


class _Envelope(msgspec.Struct):
    event: str = ""


# Twilio sends numbers as strings ("sequenceNumber": "3", "chunk": "1"): not strict.
_DECODE = msgspec.json.Decoder(_Inbound, strict=False)
_ENVELOPE = msgspec.json.Decoder(_Envelope)


class _Payload(msgspec.Struct):
    payload: str


class _Name(msgspec.Struct):
    name: str


class _OutMedia(msgspec.Struct, tag="media", tag_field="event", rename="camel"):
    stream_sid: str
    media: _Payload


class _OutMark(msgspec.Struct, tag="mark", tag_field="event", rename="camel"):
    stream_sid: str
    mark: _Name


class _OutClear(msgspec.Struct, tag="clear", tag_field="event", rename="camel"):
    stream_sid: str


_ENCODE = msgspec.json.Encoder()

# --------------------------------------------------------------------------- the state machine


@dataclass(slots=True)
class _Mark:
    turn: int
    played_ms: float
    #: How many clears had been sent when this mark was (a later clear voids it).
    clears: int


class MediaStream:
    """One Twilio Media Stream, seen from the server (see the module docstring)."""

    def __init__(self) -> None:
        self.state = State.IDLE
        self.start: Start | None = None
        self._pending: OrderedDict[str, _Mark] = OrderedDict()
        self._sent_ms: dict[int, float] = {}
        self._clears = 0
        self._cleared_through = -1
        self._seq = itertools.count(1)

    @property
    def stream_sid(self) -> str:
        return self.start.stream_sid if self.start else ""

    @property
    def cleared_through(self) -> int:
        """The newest reply a ``clear`` has dropped (-1: none): its audio is not sent again."""
        return self._cleared_through

    @property
    def pending_marks(self) -> int:
        """Marks sent whose echo has not come back (audio Twilio may still hold)."""
        return len(self._pending)

    # -- inbound --------------------------------------------------------------------------

    def receive(self, data: str | bytes) -> TwilioEvent:
        """One frame from Twilio, as an event; :class:`ProtocolError` if it breaks the protocol."""
        try:
            message = _DECODE.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._undecodable(data, exc) from exc
        event = message.__struct_config__.tag
        assert isinstance(event, str)
        after = TRANSITIONS.get((self.state, event))
        if after is None:
            raise ProtocolError(
                f"{event!r} is not allowed in state {self.state.value}", "out_of_order"
            )
        sid = message.stream_sid
        if self.start is not None and sid is not None and sid != self.start.stream_sid:
            raise ProtocolError(f"{event!r} for another stream ({sid!r})", "wrong_stream")
        result = self._interpret(message)
        self.state = after
        return result

    def _undecodable(self, data: str | bytes, exc: Exception) -> ProtocolError:
        try:
            event = _ENVELOPE.decode(data).event
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ProtocolError(f"not a JSON object with an event: {exc}", "malformed")
        if event not in _KNOWN:
            return ProtocolError(f"unknown event {event!r}", "unknown_event")
        return ProtocolError(f"invalid {event!r} message: {exc}", "invalid")

    def _interpret(self, message: _Inbound) -> TwilioEvent:
        if isinstance(message, _InMedia):
            body = _need(message.media, "media")
            try:
                payload = base64.b64decode(body.payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(f"media payload is not base64: {exc}", "bad_payload") from exc
            return Media(payload, body.track, body.chunk, body.timestamp)
        if isinstance(message, _InMark):
            return self._echo(_need(message.mark, "mark").name)
        if isinstance(message, _InDtmf):
            dtmf = _need(message.dtmf, "dtmf")
            if not _DIGIT.fullmatch(dtmf.digit):
                raise ProtocolError(f"not a DTMF digit: {dtmf.digit!r}", "invalid")
            return Dtmf(dtmf.digit, dtmf.track)
        if isinstance(message, _InStart):
            start = _need(message.start, "start")
            fmt = start.media_format
            self.start = Start(
                start.stream_sid,
                start.call_sid,
                start.account_sid,
                tuple(start.tracks),
                dict(start.custom_parameters),
                fmt.encoding,
                fmt.sample_rate,
                fmt.channels,
            )
            return self.start
        if isinstance(message, _InStop):
            return Stop(message.stop.account_sid, message.stop.call_sid)
        return Connected(message.protocol, message.version)

    def _echo(self, name: str) -> Played | MarkCleared:
        mark = self._pending.get(name)
        if mark is None:
            raise ProtocolError(f"a mark we did not send (or already echoed): {name!r}", "mark")
        # Echoes come back in the order the marks were sent: older ones are settled too.
        while self._pending:
            _, oldest = self._pending.popitem(last=False)
            if oldest is mark:
                break
        if mark.clears != self._clears:
            return MarkCleared(mark.turn, name)
        return Played(mark.turn, mark.played_ms, name)

    # -- outbound -------------------------------------------------------------------------

    def send_audio(self, turn: int, payloads: Iterable[bytes]) -> list[str]:
        """Frames for μ-law audio of reply ``turn``: one ``media`` per payload, then a ``mark``.

        Nothing for a reply already cleared, nor once the stream has stopped.
        """
        self._require_start()
        if self.state is State.STOPPED or turn <= self._cleared_through:
            return []
        sid = self.start.stream_sid if self.start else ""
        frames: list[str] = []
        total = self._sent_ms.get(turn, 0.0)
        for payload in payloads:
            if not payload:
                continue
            total += len(payload) / 8.0  # μ-law at 8 kHz: 8 bytes a millisecond
            media = _OutMedia(sid, _Payload(base64.b64encode(payload).decode("ascii")))
            frames.append(_ENCODE.encode(media).decode())
        if not frames:
            return []
        self._sent_ms[turn] = total
        # A unique name (looked up, never parsed back: see the module docstring).
        name = f"{next(self._seq)}:t{turn}:{total:.0f}ms"
        self._pending[name] = _Mark(turn, total, self._clears)
        if len(self._pending) > MAX_PENDING_MARKS:
            self._pending.popitem(last=False)
        frames.append(_ENCODE.encode(_OutMark(sid, _Name(name))).decode())
        return frames

    def clear(self, turn: int) -> str | None:
        """The ``clear`` frame that drops reply ``turn`` (and older) from Twilio's buffer.

        ``None`` when Twilio holds only newer replies, or the stream has stopped.
        """
        self._require_start()
        self._cleared_through = max(self._cleared_through, turn)
        if self.state is State.STOPPED:
            return None
        if self._pending and all(m.turn > turn for m in self._pending.values()):
            return None
        self._clears += 1
        return _ENCODE.encode(_OutClear(self.stream_sid)).decode()

    def _require_start(self) -> None:
        if self.start is None:
            raise ProtocolError("nothing can be sent before the stream's start", "not_started")


def _need(body: _T | None, event: str) -> _T:
    if body is None:
        raise ProtocolError(f"{event!r} message without its {event!r} object", "invalid")
    return body
