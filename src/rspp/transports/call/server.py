"""The server's end of the call protocol, sans I/O (``docs/protocol.md``).

Everything that affects the state of one connection lives here: the
handshake, what a client may send in each state, the limits (frame size,
flood), and turning frames into what the shell must do. This file does not
know about sockets, tasks or sessions: the ASGI endpoint feeds it frames and
the time, and carries out the actions it returns. One error type reaches the
shell, :class:`CallClosed` -- close the socket with its code.

States: ``HANDSHAKE`` (only ``call.hello`` is valid) -> ``OPEN`` (after the
shell accepted the hello with :meth:`CallServer.ready`) -> ``CLOSED``.

Theory of operation. A frame is either fatal (:class:`CallClosed`: protocol
violations, flooding, oversized frames), refused (a :class:`Refused` action:
the shell answers an ``error`` frame and counts it; the call goes on), or
turned into an action: :class:`Start` (authenticate and open or resume the
call), :class:`Input` (push into the session), :class:`Played` (a playback
report), :class:`Bye`. Client audio is resampled to the pipeline's rate here,
so the session only ever sees its own format; bot audio is encoded (and
resampled to the client's rate) by :meth:`CallServer.encode`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np

from rspp.events import ABI_VERSION, AudioIn, AudioOut, Event, Metrics, PlaybackPosition
from rspp.transports.audio import Resampler
from rspp.transports.call.wire import (
    PROTOCOL_VERSION,
    Bye,
    Hello,
    Latency,
    Ready,
    WireError,
    decode_message,
    encode_audio_frame,
    encode_message,
)

__all__ = [
    "Action",
    "CallClosed",
    "CallServer",
    "Input",
    "Limits",
    "Played",
    "Refused",
    "Start",
    "State",
]

#: What a client may push into a session besides audio.
CLIENT_KINDS: Final = frozenset(
    {"control.interrupt", "control.cancel", "playback.position", "user.text"}
)


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class CallClosed(Exception):
    """The connection must be closed with ``code`` (a WebSocket close code) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason[:120]  # a close reason is at most 123 bytes


@dataclass(frozen=True)
class Limits:
    """What one connection may send (``docs/protocol.md``, close codes 4413 and 4429)."""

    max_frame_bytes: int = 65536
    #: Audio faster than this many times real time, sustained, is a flood.
    audio_rate_factor: float = 4.0
    #: ... with this much audio allowed in one burst (seconds).
    audio_burst_s: float = 2.0
    text_frames_per_s: float = 200.0
    text_burst: float = 200.0


@dataclass(frozen=True)
class Start:
    """The client said hello: authenticate it, open (or resume) its call, then :meth:`ready`."""

    hello: Hello


@dataclass(frozen=True)
class Input:
    """Push this event into the session."""

    event: Event


@dataclass(frozen=True)
class Played:
    """A playback report: of reply ``turn``, ``played_ms`` have been heard."""

    turn: int
    played_ms: float


@dataclass(frozen=True)
class Refused:
    """Answer an ``error`` frame with ``code`` (and count it); the call goes on."""

    code: str
    message: str


@dataclass(frozen=True)
class Ended:
    """The client said ``call.bye``."""

    reason: str


Action = Start | Input | Played | Refused | Ended


class _Bucket:
    """A token bucket: ``rate`` per second, ``burst`` at most."""

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.level, self.stamp = rate, burst, burst, -1.0

    def take(self, amount: float, now: float) -> bool:
        if self.stamp >= 0.0:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= amount
        return self.level >= 0.0


class CallServer:
    """One connection, server side. Feed it frames; do what it returns."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.state = State.HANDSHAKE
        self.limits = limits or Limits()
        self.pipeline_rate = 0
        self.hello: Hello | None = None
        self._text = _Bucket(self.limits.text_frames_per_s, self.limits.text_burst)
        self._audio: _Bucket | None = None
        self._input: Resampler | None = None
        self._output: Resampler | None = None
        self._channels_in = self._channels_out = 1
        self._sample_bytes = 2

    # -- client -> server --------------------------------------------------------------

    def receive_text(self, data: str, now: float) -> list[Action]:
        """One text frame at time ``now`` (seconds, any monotonic origin)."""
        self._check_open_or_handshake()
        if len(data) > self.limits.max_frame_bytes:
            raise self._close(4413, "text frame too large")
        if not self._text.take(1.0, now):
            raise self._close(4429, "too many text frames")
        try:
            message = decode_message(data)
        except WireError as exc:
            if self.state is State.HANDSHAKE:
                raise self._close(4400, f"invalid hello: {exc}") from exc
            return [Refused("bad_json", str(exc))]
        if self.state is State.HANDSHAKE:
            if not isinstance(message, Hello):
                raise self._close(4400, "the first frame must be call.hello")
            return [self._hello(message)]
        if isinstance(message, Bye):
            return [Ended(message.reason)]
        if not isinstance(message, Event):
            return [Refused("kind_not_allowed", f"a client does not send {message_kind(message)}")]
        kind = message.kind
        if kind not in CLIENT_KINDS:
            if message.__class__.__name__ == "UnknownEvent":
                return [Refused("unknown_kind", f"unknown kind {kind!r}")]
            return [Refused("kind_not_allowed", f"a client may not send {kind!r}")]
        if isinstance(message, PlaybackPosition):
            return [Played(message.turn, message.played_ms)]
        return [Input(message)]

    def receive_bytes(self, data: bytes, now: float) -> list[Action]:
        """One binary frame (client audio) at time ``now``."""
        self._check_open_or_handshake()
        if self.state is State.HANDSHAKE or self._audio is None or self._input is None:
            raise self._close(4400, "audio before call.hello")
        size = len(data)
        if size > self.limits.max_frame_bytes:
            raise self._close(4413, "audio frame too large")
        if size % self._sample_bytes:
            raise self._close(4400, "audio frame with a partial sample")
        if not self._audio.take(size, now):
            raise self._close(4429, "audio faster than real time")
        if not size:
            return []
        pcm = data
        if self._channels_in == 2:
            frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
            pcm = frames.mean(axis=1).astype("<i2").tobytes()
        pcm = self._input.process(pcm)
        if not pcm:
            return []  # the resampler holds it until it has enough
        return [Input(AudioIn(pcm=pcm, sample_rate=self.pipeline_rate))]

    # -- the shell's answers -----------------------------------------------------------

    def ready(
        self,
        *,
        session: str,
        pipeline: str,
        pipeline_rate: int,
        resume_token: str,
        resume_window_s: float,
        lead_ms: float,
        resumed: bool = False,
        missed: int = 0,
    ) -> str:
        """Accept the hello: the call is open. Returns the ``call.ready`` frame to send."""
        hello = self.hello
        if self.state is not State.HANDSHAKE or hello is None:
            raise RuntimeError("ready() is the answer to a hello")
        self.state = State.OPEN
        self.pipeline_rate = pipeline_rate
        fmt_in, fmt_out = hello.input, hello.output
        self._channels_in, self._channels_out = fmt_in.channels, fmt_out.channels
        self._sample_bytes = 2 * fmt_in.channels
        limits = self.limits
        rate = fmt_in.bytes_per_ms * 1000
        self._audio = _Bucket(rate * limits.audio_rate_factor, rate * limits.audio_burst_s)
        self._input = Resampler(fmt_in.sample_rate, self.pipeline_rate)
        self._output = Resampler(self.pipeline_rate, fmt_out.sample_rate)
        return encode_message(
            Ready(
                session=session,
                pipeline=pipeline,
                input=fmt_in,
                output=fmt_out,
                resume_token=resume_token,
                resume_window_s=resume_window_s,
                lead_ms=lead_ms,
                resumed=resumed,
                missed=missed,
            )
        )

    def refuse(self, code: int, reason: str) -> CallClosed:
        """The shell refuses the hello (bad token, unknown resume token, full): close."""
        return self._close(code, reason)

    # -- server -> client --------------------------------------------------------------

    def encode(self, event: Event) -> str | bytes | list[str | bytes] | None:
        """The frame(s) for one output event (``None``: not for the client).

        At the end of a reply (``turn.done``) the output resampler's tail goes first, in
        an audio frame of that turn without a position (it is never resent, so it needs
        none; ``docs/protocol.md``).
        """
        if self.state is not State.OPEN or self._output is None:
            return None
        if type(event) is AudioOut:
            if event.sample_rate != self._output.in_rate:  # a pipeline that changed its rate
                self._output = Resampler(event.sample_rate, self._output.out_rate)
            pcm = self._output.process(event.pcm)
            if self._channels_out == 2:
                pcm = np.repeat(np.frombuffer(pcm, dtype="<i2"), 2).tobytes()
            return encode_audio_frame(event.turn, event.inc, event.pos, event.text, pcm)
        if type(event) is Metrics:
            if event.name != "turn.latency":
                return None
            return encode_message(Latency(turn=event.turn, values=event.values))
        kind = event.kind
        if kind == "control.clear_buffer":
            self._output.reset()  # the next reply starts clean, with no tail of this one
        elif kind == "turn.done":
            tail = self._output.flush()  # the last milliseconds of the reply the filter held
            if tail:
                if self._channels_out == 2:
                    tail = np.repeat(np.frombuffer(tail, dtype="<i2"), 2).tobytes()
                return [
                    encode_audio_frame(event.turn, event.inc, 0, "", tail),
                    encode_message(event),
                ]
        return encode_message(event)

    def bye(self, reason: str = "bye") -> str:
        """The frame that tells the client the call is over."""
        return encode_message(Bye(reason=reason))

    def closed(self) -> None:
        """The connection is gone."""
        self.state = State.CLOSED

    # -- internals ---------------------------------------------------------------------

    def _hello(self, hello: Hello) -> Start:
        if hello.protocol != PROTOCOL_VERSION:
            raise self._close(4400, f"protocol {hello.protocol} is not spoken here")
        if hello.abi.split(".")[0] != ABI_VERSION.split(".")[0]:
            raise self._close(4400, f"ABI {hello.abi} is not compatible with {ABI_VERSION}")
        self.hello = hello
        return Start(hello)

    def _check_open_or_handshake(self) -> None:
        if self.state is State.CLOSED:
            raise CallClosed(1000, "closed")

    def _close(self, code: int, reason: str) -> CallClosed:
        self.state = State.CLOSED
        return CallClosed(code, reason)


def message_kind(message: object) -> str:
    """The ``kind`` of a protocol message or event (for error messages)."""
    if isinstance(message, Event):
        return message.kind
    config = getattr(type(message), "__struct_config__", None)
    return str(getattr(config, "tag", type(message).__name__))
