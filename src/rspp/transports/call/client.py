"""The client's end of the call protocol, sans I/O (``docs/protocol.md``).

Everything that affects the state of one call, as a client sees it, lives
here: the handshake (and the resume handshake), which frames are new and
which are duplicates, and the **playout model** -- the bot's audio as a
speaker plays it. This file does not know about sockets, tasks or real time:
the shell (:mod:`rspp.client`) feeds it the server's frames and the time, sends
what :meth:`CallClient.data_to_send` returns, and acts on the happenings it
gets back. One error type reaches the shell, :class:`~rspp.transports.call.wire.WireError`:
the server broke the protocol.

States (the table :data:`_TRANSITIONS` is the whole of it)::

    IDLE --hello--> HANDSHAKE --call.ready--> OPEN --call.bye--> CLOSED
      ^                 |                       |
      +----------- connection lost -------------+     (a resume starts at IDLE again)

Theory of operation.

*Duplicates.* Every output event of a call carries ``(inc, pos)``, strictly
increasing across reconnects and moves. The client keeps the highest pair it
has accepted and drops anything at or below it; a resume tells the server that
pair (``last_pos``), and whatever the server resends above it is new to us.
Events without a position (transcripts, text, latency) are never duplicates:
the server does not resend them.

*Playout.* Bot audio frames are queued in arrival order and played at real
time by a clock the shell advances (:meth:`CallClient.advance`): a frame that
arrives while nothing plays starts playing at once, a queue that runs dry is
silence (an underrun), ``control.pause`` holds the queue where it is and
``control.resume`` plays on. ``control.clear_buffer`` drops every frame of
turns ``<= turn`` at once -- and any that still arrive later -- so after a
barge-in the client holds nothing of the interrupted reply. What was played
is reported (``playback.position``, a running total per turn) at least every
``report_every_ms`` while playing, when a turn's queued audio runs out, and
right after a clear, so the server's record of what the user heard follows
the ear, not the socket.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from rspp.events import Cancel, Event, Interrupt, PlaybackPosition, UserText
from rspp.transports.call.wire import (
    PROTOCOL_VERSION,
    AudioFormat,
    AudioFrame,
    Bye,
    Hello,
    Latency,
    Ready,
    WireError,
    decode_audio_frame,
    decode_message,
    encode_message,
)

__all__ = [
    "BotAudio",
    "CallClient",
    "Cleared",
    "Closed",
    "Happening",
    "Opened",
    "Played",
    "Playout",
    "Received",
    "ReplyEnded",
    "ReplyStarted",
    "ServerLatency",
    "State",
]

#: No audio for this long: what plays has stopped (an underrun, or the end of a reply whose
#: ``turn.done`` is still to come), so its position is reported.
_DRY_S: Final = 0.04
#: The largest binary frame a client may send (``docs/protocol.md``: 64 KiB, else 4413).
MAX_FRAME_BYTES: Final = 65536


class State(enum.Enum):
    IDLE = "idle"
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


#: (state, what happened) -> the next state. Anything else is a protocol error.
_TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (State.IDLE, "hello"): State.HANDSHAKE,
    (State.HANDSHAKE, "ready"): State.OPEN,
    (State.HANDSHAKE, "lost"): State.IDLE,
    (State.HANDSHAKE, "bye"): State.CLOSED,
    (State.OPEN, "lost"): State.IDLE,
    (State.OPEN, "bye"): State.CLOSED,
    (State.IDLE, "lost"): State.IDLE,
    (State.IDLE, "bye"): State.CLOSED,
    (State.CLOSED, "lost"): State.CLOSED,
    (State.CLOSED, "bye"): State.CLOSED,
}


# -- happenings: what the shell gets back ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """``call.ready``: the call is live (``ready.resumed``: it is the same call as before)."""

    ready: Ready


@dataclass(frozen=True, slots=True)
class Received:
    """An ABI event from the session (transcripts, turn lifecycle, text, clears, errors)."""

    event: Event


@dataclass(frozen=True, slots=True)
class BotAudio:
    """A new bot audio frame, queued for playout."""

    frame: AudioFrame


@dataclass(frozen=True, slots=True)
class ServerLatency:
    """``call.latency``: one turn's latency breakdown as the server measured it (ms)."""

    turn: int
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Played:
    """Audio of ``turn`` that the playout played, starting at time ``at``.

    ``text`` is the words of the frames this piece finished (a frame's words
    count as heard once its audio has played to the end).
    """

    turn: int
    pcm: bytes
    at: float
    text: str = ""


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """The first sample of reply ``turn`` was played at time ``at``."""

    turn: int
    at: float


@dataclass(frozen=True, slots=True)
class ReplyEnded:
    """Reply ``turn`` is over for the ear: played out, or cut (``interrupted``)."""

    turn: int
    played_ms: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class Cleared:
    """``control.clear_buffer``: audio of turns ``<= turn`` was dropped (``dropped_ms`` of it)."""

    turn: int
    dropped_ms: float


@dataclass(frozen=True, slots=True)
class Closed:
    """The server said ``call.bye``: the call is over."""

    reason: str


Happening = (
    Opened
    | Received
    | BotAudio
    | ServerLatency
    | Played
    | ReplyStarted
    | ReplyEnded
    | Cleared
    | Closed
)


# -- the playout model -----------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    turn: int
    pcm: bytes
    text: str
    offset: int = 0  # bytes already played


@dataclass(slots=True)
class _Turn:
    received: int = 0  # bytes queued, ever
    played: int = 0  # bytes
    reported_ms: float = -1.0
    carry: str = ""  # words of frames without audio, for the next frame with some
    done: bool = False  # the server said turn.done: no more audio comes
    started: bool = False
    ended: bool = False


@dataclass
class Playout:
    """Bot audio as a speaker plays it: in order, at real time, from when it arrives.

    Pure: the caller passes the time (seconds, any monotonic origin) to every
    method, and each method first plays what was due by then. Methods return
    what happened; :attr:`reports` collects the ``playback.position`` reports
    due, as ``(turn, played_ms)``, for the owner to send.
    """

    fmt: AudioFormat = field(default_factory=AudioFormat)
    report_every_ms: float = 100.0
    reports: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sample = 2 * self.fmt.channels
        self._rate = self.fmt.sample_rate * self._sample  # bytes per second
        self._queue: deque[_Chunk] = deque()
        self._turns: dict[int, _Turn] = {}
        self._clock = -math.inf  # played up to here
        self._current = 0  # the turn played last
        self._dry_at = math.inf  # when the queue ran out of audio
        self._paused = False
        #: Audio of turns at or below this was cleared: it is never played.
        self.cleared_through = 0

    # -- questions -----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def playing(self) -> int:
        """The turn whose audio plays now (0: silence)."""
        return self._queue[0].turn if self._queue and not self._paused else 0

    def held_ms(self, turn: int | None = None) -> float:
        """Audio queued and not yet played (of one turn, or all)."""
        held = sum(len(c.pcm) - c.offset for c in self._queue if turn is None or c.turn == turn)
        return held * 1000 / self._rate

    def played_ms(self, turn: int) -> float:
        """Audio of ``turn`` played so far."""
        state = self._turns.get(turn)
        return 0.0 if state is None else state.played * 1000 / self._rate

    def ended(self, turn: int) -> bool:
        """Whether reply ``turn`` is over for the ear."""
        state = self._turns.get(turn)
        return state is not None and state.ended

    # -- input ---------------------------------------------------------------------------

    def push(self, frame: AudioFrame, now: float) -> list[Happening]:
        """Queue one frame arriving at ``now`` (audio of a cleared or ended reply is dropped)."""
        out = self.advance(now)
        if len(frame.pcm) % self._sample:
            raise WireError("bot audio frame with a partial sample")
        if frame.turn <= self.cleared_through:
            return out
        state = self._turn(frame.turn)
        if state.ended:
            return out  # over for the ear already (a newer reply has played): stale
        if not frame.pcm:
            # Resampling delay: the audio of these words is in the frames to come.
            state.carry += frame.text
            return out
        if not self._queue:
            self._clock = now  # nothing was playing: this frame starts now
            self._dry_at = math.inf
        self._queue.append(_Chunk(frame.turn, frame.pcm, state.carry + frame.text))
        state.carry = ""
        state.received += len(frame.pcm)
        return out

    def advance(self, now: float) -> list[Happening]:
        """Play what is due by ``now``."""
        out: list[Happening] = []
        if now <= self._clock:
            return out
        if self._paused or not self._queue:
            self._clock = now
            self._check_report(now)
            return out
        # (A hair over, so that float rounding never holds back a whole sample.)
        budget = math.floor((now - self._clock) * self._rate + 1e-6) // self._sample * self._sample
        at = self._clock
        queue = self._queue
        while budget > 0 and queue:
            chunk = queue[0]
            state = self._turn(chunk.turn)
            take = min(budget, len(chunk.pcm) - chunk.offset)
            piece = chunk.pcm[chunk.offset : chunk.offset + take]
            chunk.offset += take
            state.played += take
            budget -= take
            finished = chunk.offset >= len(chunk.pcm)
            if not state.started:
                state.started = True
                out.append(ReplyStarted(chunk.turn, at))
                self._report(chunk.turn)  # from now on the server counts what is played
            self._current = chunk.turn
            out.append(Played(chunk.turn, piece, at, chunk.text if finished else ""))
            at += take / self._rate
            if finished:
                queue.popleft()
                if not queue or queue[0].turn != chunk.turn:
                    out += self._ran_out(chunk.turn, newer=bool(queue))
        if queue:
            self._clock = at
        else:  # the rest was silence
            self._clock = now
            self._dry_at = min(self._dry_at, at)
        self._check_report(now)
        return out

    def pause(self, now: float) -> list[Happening]:
        """``control.pause``: stop where it is, keeping the queue; report where it stopped."""
        out = self.advance(now)
        if not self._paused and self._queue:
            self._report(self._queue[0].turn)
        self._paused = True
        return out

    def resume(self, now: float) -> list[Happening]:
        """``control.resume``: play on from where it paused."""
        out = self.advance(now)
        self._paused = False
        return out

    def clear(self, turn: int, now: float) -> list[Happening]:
        """``control.clear_buffer``: drop audio of turns ``<= turn`` now; report where it ended."""
        out = self.advance(now)
        self.cleared_through = max(self.cleared_through, turn)
        dropped = self._cut(turn, out)
        out.append(Cleared(turn, dropped * 1000 / self._rate))
        return out

    def done(self, turn: int, now: float) -> list[Happening]:
        """``turn.done``: the server sent all of ``turn``; it ends once its queued audio played."""
        out = self.advance(now)
        state = self._turn(turn)
        state.done = True
        if state.carry:
            # The reply's last words came in frames without audio: they end with its audio.
            if self._queue and self._queue[-1].turn == turn:
                self._queue[-1].text += state.carry
            elif state.played:
                out.append(Played(turn, b"", now, state.carry))
            state.carry = ""
        if not state.ended and not any(c.turn == turn for c in self._queue):
            self._report(turn)
            out.append(self._end(turn, interrupted=False))
        return out

    def interrupted(self, turn: int, now: float) -> list[Happening]:
        """``turn.interrupted``: the reply is over; nothing more of it plays."""
        out = self.advance(now)
        self.cleared_through = max(self.cleared_through, turn)
        self._cut(turn, out)
        state = self._turn(turn)
        if not state.ended:
            out.append(self._end(turn, interrupted=True))
        return out

    # -- internals -----------------------------------------------------------------------

    def _turn(self, turn: int) -> _Turn:
        state = self._turns.get(turn)
        if state is None:
            state = self._turns[turn] = _Turn()
            if len(self._turns) > 64:  # keep the recent ones
                del self._turns[min(self._turns)]
        return state

    def _cut(self, turn: int, out: list[Happening]) -> int:
        """Drop what is held of turns ``<= turn``; end those replies. Returns bytes dropped."""
        before = sum(len(c.pcm) - c.offset for c in self._queue)
        self._queue = deque(c for c in self._queue if c.turn > turn)
        dropped = before - sum(len(c.pcm) - c.offset for c in self._queue)
        for t, state in sorted(self._turns.items()):
            if t <= turn and state.received and not state.ended:
                self._report(t)
                out.append(self._end(t, interrupted=True))
        return dropped

    def _check_report(self, now: float) -> None:
        """Report the turn last played if a report is due, or if its audio has stopped."""
        current = self._turns.get(self._current)
        if current is None or current.ended:
            return
        behind = self.played_ms(self._current) - current.reported_ms
        if behind >= self.report_every_ms or (
            behind > 0 and not self._queue and now - self._dry_at >= _DRY_S
        ):
            self._report(self._current)

    def _ran_out(self, turn: int, *, newer: bool) -> list[Happening]:
        """The queue holds no more audio of ``turn``: its end (or just an underrun)."""
        state = self._turn(turn)
        if (state.done or newer) and not state.ended:
            self._report(turn)
            return [self._end(turn, interrupted=False)]
        return []

    def _end(self, turn: int, *, interrupted: bool) -> ReplyEnded:
        state = self._turn(turn)
        state.ended = True
        return ReplyEnded(turn, self.played_ms(turn), interrupted)

    def _report(self, turn: int) -> None:
        state = self._turn(turn)
        ms = self.played_ms(turn)
        if state.received and ms > state.reported_ms:
            state.reported_ms = ms
            self.reports.append((turn, ms))


# -- the connection --------------------------------------------------------------------


class CallClient:
    """One call, client side, across its connections. Feed it frames; send what it returns."""

    def __init__(
        self,
        *,
        token: str = "",
        pipeline: str = "",
        input: AudioFormat | None = None,
        output: AudioFormat | None = None,
        report_every_ms: float = 100.0,
        hold_audio_ms: float = 5000.0,
    ) -> None:
        self.state = State.IDLE
        self.token = token
        self.pipeline = pipeline
        self.input = input or AudioFormat()
        self.output = output or AudioFormat()
        self.playout = Playout(self.output, report_every_ms)
        self.ready: Ready | None = None
        #: The highest ``(inc, pos)`` accepted (``None``: nothing positioned yet).
        self.last_pos: tuple[int, int] | None = None
        #: The highest ``(inc, seq)`` of an event received (text included; see ``Hello``).
        self.last_seq: tuple[int, int] | None = None
        #: Positioned frames dropped as already received (resends after a resume).
        self.duplicates = 0
        #: Of those, the ones from an older incarnation than one already received (output of
        #: an owner that was replaced: a cluster's gateway should never let one through).
        self.stale = 0
        #: Client audio dropped because no connection was open (beyond what is held).
        self.dropped_audio_bytes = 0
        #: While a call's connection is down, the newest ``hold_audio_ms`` of the user's
        #: audio is held and sent first on the resumed connection: what the user says
        #: meanwhile (to another gateway, say) is heard late rather than never.
        self.hold_audio_ms = hold_audio_ms
        self._held_audio: deque[bytes] = deque()
        self._held_bytes = 0
        self._outbox: list[str | bytes] = []

    @property
    def resumable(self) -> bool:
        """A call was opened and has not ended: :meth:`hello` resumes it."""
        return self.ready is not None and self.state is not State.CLOSED

    # -- the connection's life -----------------------------------------------------------

    def hello(self) -> None:
        """Start a handshake on a new connection (a resume, once a call was opened)."""
        self._go("hello")
        ready = self.ready
        self._outbox = [
            encode_message(
                Hello(
                    protocol=PROTOCOL_VERSION,
                    token=self.token,
                    pipeline=self.pipeline,
                    input=self.input,
                    output=self.output,
                    resume=ready.resume_token if ready is not None else "",
                    last_pos=(self.last_pos or (0, 0)) if ready is not None else None,
                    last_seq=self.last_seq if ready is not None else None,
                )
            )
        ]

    def connection_lost(self) -> None:
        """The socket is gone; what was not sent is dropped (a report is resent on resume)."""
        self._go("lost")
        self._outbox = []

    def data_to_send(self) -> list[str | bytes]:
        """Frames to send now, in order (text frames are ``str``)."""
        reports = self.playout.reports
        if reports and self.state is State.OPEN:
            latest = dict(reports)  # a report is a total: the last one of each turn says it all
            reports.clear()
            self._outbox += [
                encode_message(PlaybackPosition(turn=turn, played_ms=ms))
                for turn, ms in latest.items()
            ]
        out, self._outbox = self._outbox, []
        return out

    # -- server -> client ----------------------------------------------------------------

    def receive_text(self, data: str | bytes, now: float) -> list[Happening]:
        """One text frame at time ``now``."""
        message = decode_message(data)
        if isinstance(message, Ready):
            if self.state is not State.HANDSHAKE:
                raise WireError("call.ready outside a handshake")
            self._go("ready")
            self.ready = message
            if self._held_audio:
                self._outbox += self._held_audio
                self._held_audio.clear()
                self._held_bytes = 0
            return [*self.playout.advance(now), Opened(message)]
        if self.state is State.CLOSED:
            # We said bye: the server's answer ends the call; nothing else matters now.
            return [Closed(message.reason)] if isinstance(message, Bye) else []
        if self.state is not State.OPEN:
            raise WireError(f"{_kind(message)} before call.ready")
        if isinstance(message, Latency):
            return [ServerLatency(message.turn, dict(message.values))]
        if isinstance(message, Bye):
            self._go("bye")
            return [*self.playout.advance(now), Closed(message.reason)]
        if isinstance(message, Hello):
            raise WireError("a server does not send call.hello")
        if message.pos and not self._new(message.inc, message.pos):
            return []
        if message.seq:
            # Text's incarnation: its writer's where the server says (a cluster gateway
            # stamps it), else the current owner's, the one of the last positioned event.
            inc = message.inc or (self.last_pos[0] if self.last_pos else 0)
            if self.last_seq is None or (inc, message.seq) > self.last_seq:
                self.last_seq = (inc, message.seq)
        out: list[Happening] = [Received(message)]
        playout = self.playout
        kind = message.kind
        if kind == "control.clear_buffer":
            out += playout.clear(message.turn, now)
        elif kind == "turn.done":
            out += playout.done(message.turn, now)
        elif kind == "turn.interrupted":
            out += playout.interrupted(message.turn, now)
        elif kind == "control.pause":
            out += playout.pause(now)
        elif kind == "control.resume":
            out += playout.resume(now)
        return out

    def receive_bytes(self, data: bytes, now: float) -> list[Happening]:
        """One binary frame (bot audio) at time ``now``."""
        if self.state is State.CLOSED:
            return []
        if self.state is not State.OPEN:
            raise WireError("bot audio before call.ready")
        frame = decode_audio_frame(data)
        if frame.pos and not self._new(frame.inc, frame.pos):
            return []  # (a frame without a position -- a reply's tail -- is never resent)
        out = self.playout.push(frame, now)
        if frame.turn > self.playout.cleared_through:
            out.append(BotAudio(frame))
        return out

    def advance(self, now: float) -> list[Happening]:
        """Let the playout clock run to ``now``; reports due are in :meth:`data_to_send`."""
        return self.playout.advance(now)

    # -- client -> server ----------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        """Queue user audio (PCM16 in the ``input`` format).

        While not connected: held (the newest ``hold_audio_ms``) if the call can be
        resumed, for the resumed connection; else dropped.
        """
        sample = 2 * self.input.channels
        if len(pcm) % sample:
            raise ValueError(f"audio of {len(pcm)} bytes is not whole {sample}-byte samples")
        step = MAX_FRAME_BYTES - MAX_FRAME_BYTES % sample
        frames = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        if self.state is State.OPEN:
            self._outbox += frames
            return
        if not self.resumable or not self.hold_audio_ms:
            self.dropped_audio_bytes += len(pcm)
            return
        held = self._held_audio
        held.extend(frames)
        self._held_bytes += len(pcm)
        limit = int(self.hold_audio_ms * self.input.bytes_per_ms)
        while self._held_bytes > limit and held:
            old = held.popleft()
            self._held_bytes -= len(old)
            self.dropped_audio_bytes += len(old)

    def send_text(self, text: str) -> None:
        """A typed user turn (``user.text``)."""
        self._event(UserText(text=text))

    def interrupt(self, reason: str = "client") -> None:
        """Ask the kernel to stop the bot (it decides, as for a barge-in)."""
        self._event(Interrupt(reason=reason))

    def cancel(self, turn: int = 0) -> None:
        """Cancel the reply of ``turn`` (0: the one in progress) and older, unconditionally."""
        self._event(Cancel(turn=turn, reason="client"))

    def bye(self, reason: str = "bye") -> None:
        """End the call."""
        if self.state is State.OPEN:
            self._outbox.append(encode_message(Bye(reason=reason)))
        self._go("bye")

    # -- internals -----------------------------------------------------------------------

    def _go(self, what: str) -> None:
        nxt = _TRANSITIONS.get((self.state, what))
        if nxt is None:
            raise WireError(f"cannot {what} in state {self.state.value}")
        self.state = nxt

    def _new(self, inc: int, pos: int) -> bool:
        if self.last_pos is not None and (inc, pos) <= self.last_pos:
            self.duplicates += 1
            if inc < self.last_pos[0]:
                self.stale += 1
            return False
        self.last_pos = (inc, pos)
        return True

    def _event(self, event: Event) -> None:
        if self.state is not State.OPEN:
            raise WireError(f"cannot send {event.kind} in state {self.state.value}")
        self._outbox.append(encode_message(event))


def _kind(message: object) -> str:
    if isinstance(message, Event):
        return message.kind
    config = getattr(type(message), "__struct_config__", None)
    return str(getattr(config, "tag", type(message).__name__))
