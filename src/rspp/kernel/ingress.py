"""The ingress: what a transport may push into a session, checked, numbered and admitted.

``push()`` is the session's only input. It refuses, with a clear error and a
counter, and without disturbing anything else:

* a data kind that is not one of the pipeline's ``input`` kinds, audio in
  another format than the spec's ``[audio]``, or not whole PCM16 frames
  (:class:`InvalidInput`);
* a control kind that is the kernel's own: only the kinds marked ``client``
  in the ABI -- ``control.interrupt``, ``control.cancel``,
  ``control.clear_buffer`` (a client's "stop") and ``playback.position`` --
  may be pushed (:class:`InvalidInput`);
* reply output (a fenced kind other than a reply root) while no reply is in
  progress: there is nothing it could belong to (:class:`InvalidInput`);
* an event that a full inbox would have to admit over its capacity: when a
  queued node that takes the pushed kind directly under the ``block`` policy
  is full, the push is refused with :class:`Overloaded` before anything
  happens, so the transport can slow down (``await session.writable(kind)``)
  and push again. Kinds under a dropping policy (``audio.in``: drop the oldest)
  are always admitted: real time beats completeness.

Input sequence numbers make replay idempotent. Every admitted push gets the
next input number, or the one the caller gives (``seq=``, e.g. the position
of the event in an input log); a push whose number is not above the last
admitted one is a duplicate: ignored, counted, ``push`` returns False. The
last admitted number moves with a snapshot, so a new owner can replay a log
from anywhere at or before the snapshot.

The header is the session's to assign: only a non-zero ``origin_ns`` (the
capture time, in session time) is kept, and the ``turn`` of a control event
(the reply a cancel or a playback report names; 0 means the reply in
progress, or the last one if none is; a number no reply has yet is taken
down to the last one given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rspp.events import AudioIn, Event, TurnCommit, TurnSpeculate, UnknownEvent, kind_of
from rspp.kernel.errors import InvalidInput, Overloaded, SessionClosed
from rspp.kernel.inbox import Inbox
from rspp.kernel.spec import Policy

if TYPE_CHECKING:
    from rspp.kernel.runner import NodeRunner
    from rspp.kernel.session import Session

__all__ = ["Ingress"]

_ROOTS = (TurnCommit, TurnSpeculate)
_TURN_0_MEANS_ACTIVE = frozenset({"control.cancel", "control.clear_buffer", "playback.position"})


class Ingress:
    """Checks and admits what transports push (see the module docstring)."""

    __slots__ = ("_audio", "_blocking", "_kinds", "_timers", "emission", "runner", "seq", "session")

    def __init__(self, session: Session, runner: NodeRunner) -> None:
        self.session = session
        self.emission = session.emission
        self._timers = session.timers
        self.runner = runner
        self._kinds = frozenset(session.pipeline.spec.input)
        self._audio = session.pipeline.spec.audio
        #: The last input sequence number admitted.
        self.seq = 0
        self._blocking: dict[str, tuple[tuple[str, Inbox], ...]] = {}  # kind -> inboxes to check

    def push(self, event: Event, *, seq: int | None = None) -> bool:
        session = self.session
        if session.state != "running":
            raise SessionClosed(f"session {session.id} is not running ({session.state})")
        now = session.clock.now_ns()  # one reading: the deadlines' instant and the stamp's
        timers = self._timers
        if timers.earliest_ns <= now:
            timers.fire_due(now)  # the deadlines up to now come first (rspp.kernel.timers)
            if session.state != "running":  # a deadline closed it
                raise SessionClosed(f"session {session.id} is not running ({session.state})")
        if seq is not None and seq <= self.seq:
            session.stats.rejected["duplicate"] += 1
            return False
        cls = event.__class__
        if cls.lane:  # control
            if not cls.client:
                self._reject("input_kind")
                raise InvalidInput(f"{event.kind!r} cannot be sent into a session")
            turns = session.turns
            if event.turn == 0 and event.kind in _TURN_0_MEANS_ACTIVE:
                # The reply in progress; with none, the last one that ended (never a number
                # no reply has yet: a clear of a future turn would clear that reply's audio).
                event.turn = turns.active or turns.fence
            elif event.turn >= turns.epoch:
                event.turn = turns.epoch - 1
        else:
            kind = event.kind
            if kind not in self._kinds:
                self._reject("input_kind")
                raise InvalidInput(f"{kind!r} is not an input kind of {session.pipeline.name!r}")
            if cls is AudioIn:
                self._check_audio(event)  # type: ignore[arg-type]
            event.turn = 0
            if cls.fenced and cls not in _ROOTS and cls is not UnknownEvent:
                active = session.turns.active
                if not active:
                    self._reject("no_reply")
                    raise InvalidInput(
                        f"{kind!r} is reply output, and no reply is in progress to take it"
                    )
                event.turn = active
            blocking = self._blocking.get(kind)
            if blocking is None:
                blocking = self._learn(event)
            if blocking:
                for name, inbox in blocking:
                    if inbox.full:
                        self._reject("overloaded")
                        raise Overloaded(name, kind, inbox.capacity)
        event.session = session.id
        event.seq = 0
        if event.origin_ns == 0:
            event.origin_ns = now  # as the emission would stamp it, without reading the clock again
        if event.pos:
            event.inc = event.pos = 0
        if seq is None:
            self.seq += 1
        else:
            self.seq = seq
        self.emission.emit(self.runner, event, None)
        return True

    def _learn(self, event: Event) -> tuple[tuple[str, Inbox], ...]:
        """The queued nodes that take ``event``'s kind straight from the ingress, blocking."""
        runner = self.runner
        kind = event.kind
        targets = runner.routes.get(kind)
        if targets is None:
            targets = runner.route(kind)
        blocking = tuple(
            (t.name, t.inbox)
            for t in targets
            if t.inbox is not None and t.inbox.policy(kind, event.overload) is Policy.BLOCK
        )
        self._blocking[kind] = blocking
        return blocking

    async def writable(self, kind: str) -> None:
        """Wait until a push of ``kind`` would not be refused for lack of room."""
        runner = self.runner
        while True:
            targets = runner.routes.get(kind)
            if targets is None:
                targets = runner.route(kind)
            full = [
                t.inbox
                for t in targets
                if t.inbox is not None
                and t.inbox.full
                and t.inbox.policy(kind, _default_overload(kind)) is Policy.BLOCK
            ]
            if not full:
                return
            await full[0].wait_space()

    def _check_audio(self, audio: AudioIn) -> None:
        want = self._audio
        if audio.sample_rate != want.sample_rate or audio.channels != want.channels:
            self._reject("audio_format")
            raise InvalidInput(
                f"audio is {audio.sample_rate} Hz x{audio.channels}, this session takes "
                f"{want.sample_rate} Hz x{want.channels} PCM16"
            )
        if not audio.pcm or len(audio.pcm) % (2 * audio.channels):
            self._reject("audio_format")
            raise InvalidInput(
                f"audio payload of {len(audio.pcm)} bytes is not whole PCM16 frames "
                f"of {audio.channels} channel(s)"
            )

    def _reject(self, reason: str) -> None:
        self.session.stats.rejected[reason] += 1


def _default_overload(kind: str) -> str:
    cls = kind_of(kind)
    return cls.overload if cls is not None else "block"
