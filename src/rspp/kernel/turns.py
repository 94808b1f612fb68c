"""The turn state machine: epochs, replies, speculation, interruption and fencing.

Everything that decides *whether* a reply may be heard, and *which* output an
interruption kills, lives in this file. It does no I/O, knows no clock and no
asyncio: it is fed inputs (a commit, a speculation, a confirmation, an
interrupt request, a cancel, a clear, a failure, "played", close) and returns
a :class:`Decision` -- the ordered actions the session shell must carry out.
Every input goes through the transition table below; an input the table has
no row for raises :class:`TurnProtocolError`, and the shell turns that into a
counted, logged drop. This file does not know how the end of a user's turn is
detected (that is the turn manager's policy); it only keeps the books that
make the kernel's guarantees hold.

Theory of operation
-------------------
A *turn number* names one reply attempt and the user input before it; events
carry it. The kernel assigns it: every reply root (``turn.commit`` or
``turn.speculate``) gets the current ``epoch`` and the epoch moves on, so the
user input that arrives after a reply started -- a barge-in, or more words
after a speculation -- already belongs to the next number. Three numbers
describe the session:

``epoch``   the number that user input gets now and the next reply will take.
``active``  the reply in progress: being spoken (RESPONDING) or prepared
            speculatively and held back (SPECULATING); 0 if none.
``fence``   the highest number whose reply is over. Every fenced-kind event
            of a turn ``<= fence`` is dropped wherever it is. It only grows.

A reply is over however it ends -- played out, interrupted, superseded,
cancelled, cleared by the client, failed, or closed -- and from that moment
it is fenced. So the numbers always satisfy one invariant: ``fence ==
epoch - 1`` while LISTENING and ``fence == active - 1`` while a reply is in
progress. The only reply whose output may move is ``active``; the kernel drops
reply output of any other turn (older: fenced; newer: no reply has that
number yet). That is also why a speculation is never started while a reply is
RESPONDING: it would have to fence the reply in progress.

States: LISTENING (no reply), SPECULATING (a speculative reply to ``active``
is being generated; nothing of it may reach the client), RESPONDING (a
committed reply is being generated or played), CLOSED. The table:

===========  ==========  ===========  =========================================
state        input       next state   actions
===========  ==========  ===========  =========================================
LISTENING    COMMIT      RESPONDING   ADVANCE
SPECULATING  COMMIT      RESPONDING   FENCE CLEAR CANCEL RECORD ADVANCE
RESPONDING   COMMIT      RESPONDING   FENCE CLEAR CANCEL RECORD ADVANCE
LISTENING    SPECULATE   SPECULATING  ADVANCE
SPECULATING  SPECULATE   SPECULATING  FENCE CLEAR CANCEL RECORD ADVANCE
SPECULATING  CONFIRM     RESPONDING   RELEASE
LISTENING    INTERRUPT   LISTENING    (ignored: nothing is being said)
SPECULATING  INTERRUPT   SPECULATING  (ignored: nothing of it is audible)
RESPONDING   INTERRUPT   LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    CANCEL      LISTENING    (ignored: no reply to cancel)
SPECULATING  CANCEL      LISTENING    FENCE CLEAR CANCEL RECORD
RESPONDING   CANCEL      LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    CLEAR       LISTENING    (ignored: nothing is being said)
SPECULATING  CLEAR       SPECULATING  (ignored: nothing of it was sent)
RESPONDING   CLEAR       LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    FAIL        LISTENING    (ignored: no reply)
SPECULATING  FAIL        LISTENING    FENCE CLEAR CANCEL RECORD
RESPONDING   FAIL        LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    PLAYED      LISTENING    (stale)
SPECULATING  PLAYED      SPECULATING  (stale)
RESPONDING   PLAYED      LISTENING    FENCE CANCEL
LISTENING    CLOSE       CLOSED       FENCE CLEAR CANCEL
SPECULATING  CLOSE       CLOSED       FENCE CLEAR CANCEL RECORD
RESPONDING   CLOSE       CLOSED       FENCE CLEAR CANCEL RECORD
CLOSED       any         --           TurnProtocolError
===========  ==========  ===========  =========================================

Rows not in the table are illegal: SPECULATE while RESPONDING, anything once
CLOSED. Guards, checked before the table, make an input that names another
reply *stale* (ignored, no state change, not an error): a CONFIRM of anything
but the held speculation (so CONFIRM never reaches the table outside
SPECULATING), a PLAYED or FAIL of anything but the active reply, a CANCEL or
CLEAR of a reply older than the active one.

CLEAR is a ``control.clear_buffer`` that did not come from the kernel (a
client's "stop", a node's own clear): the audio it drops can no longer be
played, so the reply ends there. FAIL is the kernel's own input for a reply
that cannot complete: a node failed on it, it made no progress before its
deadline, or a restore could not continue it; its reason says which.

The action order is the cancellation-first order: fence first (from that
instant no event of the turn is delivered anywhere), then clear the output
buffers, then cancel the generating work, then record what was delivered
(``turn.interrupted``; for a dropped speculation, nothing was). RELEASE opens
the output gate for a confirmed speculation: what it had prepared goes out at
once. A new commit while a reply is in progress supersedes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from rspp.kernel.errors import TurnProtocolError

__all__ = ["Action", "Decision", "Input", "State", "TurnMachine", "TurnSnapshot"]


class State(enum.Enum):
    LISTENING = "listening"
    SPECULATING = "speculating"
    RESPONDING = "responding"
    CLOSED = "closed"


class Input(enum.Enum):
    COMMIT = "commit"
    SPECULATE = "speculate"
    CONFIRM = "confirm"
    INTERRUPT = "interrupt"
    CANCEL = "cancel"
    CLEAR = "clear"
    FAIL = "fail"
    PLAYED = "played"
    CLOSE = "close"


class Action(enum.Enum):
    FENCE = "fence"  # raise the fence to the machine's ``fence``
    CLEAR = "clear"  # tell the outputs to drop buffered audio of turns <= fence
    CANCEL = "cancel"  # cancel in-flight work on turns <= fence
    RECORD = "record"  # record what of Decision.target was delivered (turn.interrupted)
    RELEASE = "release"  # open the output gate for Decision.committed (a confirmed speculation)
    ADVANCE = "advance"  # Decision.committed became the active reply; the epoch moved past it


L, S, R, C = State.LISTENING, State.SPECULATING, State.RESPONDING, State.CLOSED
F, CL, CA, RE, RL, AD = (
    Action.FENCE,
    Action.CLEAR,
    Action.CANCEL,
    Action.RECORD,
    Action.RELEASE,
    Action.ADVANCE,
)
_DROP = (F, CL, CA, RE)

_TRANSITIONS: dict[tuple[State, Input], tuple[State, tuple[Action, ...]]] = {
    (L, Input.COMMIT): (R, (AD,)),
    (S, Input.COMMIT): (R, (*_DROP, AD)),
    (R, Input.COMMIT): (R, (*_DROP, AD)),
    (L, Input.SPECULATE): (S, (AD,)),
    (S, Input.SPECULATE): (S, (*_DROP, AD)),
    (S, Input.CONFIRM): (R, (RL,)),
    (L, Input.INTERRUPT): (L, ()),
    (S, Input.INTERRUPT): (S, ()),
    (R, Input.INTERRUPT): (L, _DROP),
    (L, Input.CANCEL): (L, ()),
    (S, Input.CANCEL): (L, _DROP),
    (R, Input.CANCEL): (L, _DROP),
    (L, Input.CLEAR): (L, ()),
    (S, Input.CLEAR): (S, ()),
    (R, Input.CLEAR): (L, _DROP),
    (L, Input.FAIL): (L, ()),
    (S, Input.FAIL): (L, _DROP),
    (R, Input.FAIL): (L, _DROP),
    (L, Input.PLAYED): (L, ()),
    (S, Input.PLAYED): (S, ()),
    (R, Input.PLAYED): (L, (F, CA)),
    (L, Input.CLOSE): (C, (F, CL, CA)),
    (S, Input.CLOSE): (C, _DROP),
    (R, Input.CLOSE): (C, _DROP),
}

#: Why a reply ended early, by (state it was in, input): the ``reason`` of turn.interrupted.
#: A FAIL of a committed reply carries the reason it was given ("failed" by default).
_REASONS: dict[tuple[State, Input], str] = {
    (S, Input.COMMIT): "speculation_miss",
    (R, Input.COMMIT): "superseded",
    (S, Input.SPECULATE): "speculation_replaced",
    (R, Input.INTERRUPT): "barge_in",
    (S, Input.CANCEL): "speculation_discarded",
    (R, Input.CANCEL): "cancel",
    (R, Input.CLEAR): "cleared",
    (S, Input.FAIL): "speculation_failed",
    (R, Input.FAIL): "failed",
    (S, Input.CLOSE): "closed",
    (R, Input.CLOSE): "closed",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the shell must do, in order.

    ``target`` is the reply that ended (the one to RECORD; for PLAYED, the one
    played out: its fence and cancel stop a generator still working on a reply
    that a later stage ended early); FENCE, CLEAR and CANCEL apply to every turn
    up to the machine's ``fence``. ``committed`` is the reply that COMMIT or SPECULATE
    started, or that CONFIRM released. ``speculative`` says whether ``target``
    was a held speculation (nothing of it ever reached the client).
    """

    input: Input
    actions: tuple[Action, ...]
    target: int = 0
    committed: int = 0
    reason: str = ""
    speculative: bool = False

    @property
    def accepted(self) -> bool:
        """Whether the shell has anything to do (an ignored or stale input has not)."""
        return bool(self.actions)


class TurnSnapshot(msgspec.Struct, frozen=True):
    """The machine's state, for moving a session."""

    state: str
    epoch: int
    active: int
    fence: int


class TurnMachine:
    """Pure turn/interrupt/speculation logic. See the module docstring."""

    __slots__ = ("active", "epoch", "fence", "state")

    def __init__(self) -> None:
        self.state = State.LISTENING
        self.epoch = 1
        self.active = 0
        self.fence = 0

    # -- inputs -------------------------------------------------------------------------

    def commit(self) -> Decision:
        """The user's turn ended: a committed reply starts; it takes the current epoch."""
        return self._apply(Input.COMMIT, started=self.epoch)

    def speculate(self) -> Decision:
        """A speculative reply starts (held back until confirmed); it takes the current epoch."""
        return self._apply(Input.SPECULATE, started=self.epoch)

    def confirm(self, turn: int) -> Decision:
        """The speculation ``turn`` is the reply: release what it prepared."""
        if self.state is not State.CLOSED and (self.state is not S or turn != self.active):
            return self._stale(Input.CONFIRM, f"turn {turn} is not the held speculation")
        return self._apply(Input.CONFIRM, started=turn)

    def interrupt(self) -> Decision:
        """A request to interrupt; it ends a reply only while one is audible (RESPONDING)."""
        return self._apply(Input.INTERRUPT)

    def cancel(self, turn: int) -> Decision:
        """Cancel the reply ``turn`` and older (the active one, if ``turn`` reaches it)."""
        return self._ending(Input.CANCEL, turn, at_least=True)

    def clear(self, turn: int) -> Decision:
        """Output of the reply ``turn`` (and older) was dropped by a client or a node."""
        return self._ending(Input.CLEAR, turn, at_least=True)

    def fail(self, turn: int, reason: str = "failed") -> Decision:
        """The reply ``turn`` cannot complete (``reason``: failed, stalled, moved)."""
        return self._ending(Input.FAIL, turn, at_least=False, reason=reason)

    def played(self, turn: int) -> Decision:
        """The reply of ``turn`` was played out completely."""
        if self.state is R and turn != self.active:
            return self._stale(Input.PLAYED, f"turn {turn} is not the reply being played")
        return self._apply(Input.PLAYED, target=self.active if self.state is R else 0)

    def close(self) -> Decision:
        """The session ends: fence everything, including the number not yet used."""
        return self._apply(Input.CLOSE, fence_to=self.epoch)

    # -- state ------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """The speculative reply whose output is held back, or 0."""
        return self.active if self.state is State.SPECULATING else 0

    @property
    def responding(self) -> int:
        """The committed reply in progress (audible), or 0."""
        return self.active if self.state is State.RESPONDING else 0

    def is_fenced(self, turn: int) -> bool:
        """Whether output of ``turn`` is fenced."""
        return turn <= self.fence

    def snapshot(self) -> TurnSnapshot:
        return TurnSnapshot(self.state.value, self.epoch, self.active, self.fence)

    @classmethod
    def restore(cls, snap: TurnSnapshot) -> TurnMachine:
        """A machine in the snapshot's state; a snapshot that breaks the invariant is refused."""
        machine = cls()
        machine.load(snap)
        return machine

    def load(self, snap: TurnSnapshot) -> None:
        """Take the snapshot's state (in place); a snapshot that breaks the invariant is refused."""
        try:
            state = State(snap.state)
        except ValueError:
            raise TurnProtocolError(f"snapshot has unknown state {snap.state!r}") from None
        if state in (State.RESPONDING, State.SPECULATING):
            consistent = snap.active >= 1 and snap.active == snap.epoch - 1 == snap.fence + 1
        elif state is State.LISTENING:
            consistent = snap.epoch >= 1 and snap.active == 0 and snap.fence == snap.epoch - 1
        else:
            consistent = snap.epoch >= 1 and snap.active == 0 and snap.fence == snap.epoch
        if not consistent:
            raise TurnProtocolError(f"inconsistent turn snapshot: {snap}")
        self.state = state
        self.epoch, self.active, self.fence = snap.epoch, snap.active, snap.fence

    # -- internals ----------------------------------------------------------------------

    def _ending(self, inp: Input, turn: int, *, at_least: bool, reason: str = "") -> Decision:
        """CANCEL, CLEAR, FAIL: they end the active reply if ``turn`` names it."""
        if self.state in (S, R):
            names_it = turn >= self.active if at_least else turn == self.active
            if not names_it:
                return self._stale(inp, f"turn {turn} is not the reply in progress")
        return self._apply(inp, reason=reason)

    def _stale(self, inp: Input, why: str) -> Decision:
        if self.state is State.CLOSED:
            raise TurnProtocolError(f"{inp.value} after the session closed")
        return Decision(inp, (), reason=why)

    def _apply(
        self, inp: Input, *, started: int = 0, fence_to: int = 0, target: int = 0, reason: str = ""
    ) -> Decision:
        key = (self.state, inp)
        row = _TRANSITIONS.get(key)
        if row is None:
            if self.state is State.CLOSED:
                raise TurnProtocolError(f"{inp.value} after the session closed")
            raise TurnProtocolError(
                f"{inp.value} while {self.state.value}"
                + (f" (reply {self.active} is in progress)" if self.active else "")
            )
        next_state, actions = row
        ended = self.active if self.state is not State.LISTENING else 0
        speculative = self.state is State.SPECULATING
        if Action.FENCE in actions:
            self.fence = max(self.fence, ended, fence_to)
        if Action.ADVANCE in actions:
            self.active = started
            self.epoch = started + 1
        elif next_state in (State.LISTENING, State.CLOSED):
            self.active = 0
        self.state = next_state
        if not reason or speculative:
            reason = _REASONS.get(key) or inp.value
        return Decision(
            inp,
            actions,
            target=ended if Action.RECORD in actions else target,
            committed=started,
            reason=reason,
            speculative=speculative and Action.RECORD in actions,
        )
