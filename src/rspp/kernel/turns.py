"""The turn state machine: epochs, replies, speculation, interruption and fencing.

Everything that decides *whether* a reply may be heard, and *which* output an
interruption kills, lives in this file. It does no I/O, knows no clock and no
asyncio: it is fed inputs (a commit, a speculation, a confirmation, an
interrupt request, a cancel, "played", close) and returns a :class:`Decision`
-- the ordered actions the session shell must carry out. Illegal inputs raise
:class:`TurnProtocolError`; the shell turns that into a counted, logged drop.
This file does not know how the end of a user's turn is detected (that is
the turn manager's policy); it only keeps the books that make the kernel's
guarantees hold.

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
``fence``   the highest fenced number. Every fenced-kind event of a turn
            ``<= fence`` is dropped wherever it is. It only grows, which is
            why a speculation is never started while a reply is in progress:
            fencing it would fence that reply too.

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
LISTENING    CANCEL      LISTENING    FENCE CLEAR CANCEL
SPECULATING  CANCEL      LISTENING    FENCE CLEAR CANCEL RECORD
RESPONDING   CANCEL      LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    PLAYED      LISTENING    (stale)
SPECULATING  PLAYED      SPECULATING  (stale)
RESPONDING   PLAYED      LISTENING    (only for the active turn)
LISTENING    CLOSE       CLOSED       FENCE CLEAR CANCEL
SPECULATING  CLOSE       CLOSED       FENCE CLEAR CANCEL RECORD
RESPONDING   CLOSE       CLOSED       FENCE CLEAR CANCEL RECORD
CLOSED       any         --           TurnProtocolError
===========  ==========  ===========  =========================================

Rows not in the table are illegal: SPECULATE while RESPONDING, CONFIRM of
anything but the held speculation (a stale CONFIRM of an already dropped or
confirmed turn is ignored, not an error). Guards: a cancel is capped to
numbers already given to replies, and cancelling a reply older than the
active one only raises the fence.

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
    (L, Input.CANCEL): (L, (F, CL, CA)),
    (S, Input.CANCEL): (L, _DROP),
    (R, Input.CANCEL): (L, _DROP),
    (L, Input.PLAYED): (L, ()),
    (S, Input.PLAYED): (S, ()),
    (R, Input.PLAYED): (L, ()),
    (L, Input.CLOSE): (C, (F, CL, CA)),
    (S, Input.CLOSE): (C, _DROP),
    (R, Input.CLOSE): (C, _DROP),
}

#: Why a reply ended early, by (state it was in, input): the ``reason`` of turn.interrupted.
_REASONS: dict[tuple[State, Input], str] = {
    (S, Input.COMMIT): "speculation_miss",
    (R, Input.COMMIT): "superseded",
    (S, Input.SPECULATE): "speculation_replaced",
    (R, Input.INTERRUPT): "barge_in",
    (S, Input.CANCEL): "speculation_discarded",
    (R, Input.CANCEL): "cancel",
    (S, Input.CLOSE): "closed",
    (R, Input.CLOSE): "closed",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the shell must do, in order.

    ``target`` is the reply that ended (the one to RECORD); FENCE, CLEAR and
    CANCEL apply to every turn up to the machine's ``fence``. ``committed`` is
    the reply that COMMIT or SPECULATE started, or that CONFIRM released.
    ``speculative`` says whether ``target`` was a held speculation (nothing of
    it ever reached the client).
    """

    input: Input
    actions: tuple[Action, ...]
    target: int = 0
    committed: int = 0
    reason: str = ""
    speculative: bool = False

    @property
    def accepted(self) -> bool:
        """Whether the shell has anything to do (``played`` changes state without actions)."""
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
        self._check_open(Input.COMMIT)
        return self._apply(Input.COMMIT, started=self.epoch)

    def speculate(self) -> Decision:
        """A speculative reply starts (held back until confirmed); it takes the current epoch."""
        self._check_open(Input.SPECULATE)
        if self.state is State.RESPONDING:
            raise TurnProtocolError(
                f"speculation while reply {self.active} is in progress (fencing the "
                "speculation would fence that reply)"
            )
        return self._apply(Input.SPECULATE, started=self.epoch)

    def confirm(self, turn: int) -> Decision:
        """The speculation ``turn`` is the reply: release what it prepared."""
        self._check_open(Input.CONFIRM)
        if self.state is not State.SPECULATING or turn != self.active:
            return Decision(Input.CONFIRM, (), reason=f"turn {turn} is not the held speculation")
        return self._apply(Input.CONFIRM, started=turn)

    def interrupt(self) -> Decision:
        """A request to interrupt; accepted only while a committed reply is in progress."""
        self._check_open(Input.INTERRUPT)
        if self.state is not State.RESPONDING:
            return Decision(Input.INTERRUPT, (), reason="nothing audible to interrupt")
        return self._apply(Input.INTERRUPT)

    def cancel(self, turn: int) -> Decision:
        """Cancel the reply ``turn`` and older. Only numbers given to replies can be cancelled."""
        self._check_open(Input.CANCEL)
        target = min(turn, self.epoch - 1)
        if target <= self.fence:
            return Decision(Input.CANCEL, (), reason=f"turn {turn} is already fenced or unused")
        if self.state is not State.LISTENING and target < self.active:
            # Cancelling an older, finished reply: fence it, leave the active one alone.
            self.fence = target
            return Decision(Input.CANCEL, (F,), target=target, reason="cancel")
        return self._apply(Input.CANCEL, fence_to=target)

    def played(self, turn: int) -> Decision:
        """The reply of ``turn`` was played out completely."""
        self._check_open(Input.PLAYED)
        if self.state is State.RESPONDING and turn == self.active:
            self.state = State.LISTENING
            self.active = 0
            return Decision(Input.PLAYED, (), target=turn, reason="played")
        return Decision(Input.PLAYED, (), reason="stale")

    def close(self) -> Decision:
        """The session ends: fence everything, including the numbers not yet used."""
        self._check_open(Input.CLOSE)
        return self._apply(Input.CLOSE, fence_to=self.epoch)

    # -- state ------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """The speculative reply whose output is held back, or 0."""
        return self.active if self.state is State.SPECULATING else 0

    def is_fenced(self, turn: int) -> bool:
        """Whether output of ``turn`` is fenced."""
        return turn <= self.fence

    def snapshot(self) -> TurnSnapshot:
        return TurnSnapshot(self.state.value, self.epoch, self.active, self.fence)

    @classmethod
    def restore(cls, snap: TurnSnapshot) -> TurnMachine:
        """A machine in the snapshot's state; an inconsistent snapshot is refused."""
        try:
            state = State(snap.state)
        except ValueError:
            raise TurnProtocolError(f"snapshot has unknown state {snap.state!r}") from None
        consistent = snap.epoch >= 1 and 0 <= snap.fence <= snap.epoch
        if state in (State.RESPONDING, State.SPECULATING):
            consistent = consistent and snap.fence < snap.active == snap.epoch - 1
        elif state is State.LISTENING:
            consistent = consistent and snap.active == 0 and snap.fence < snap.epoch
        else:
            consistent = consistent and snap.active == 0
        if not consistent:
            raise TurnProtocolError(f"inconsistent turn snapshot: {snap}")
        machine = cls()
        machine.state = state
        machine.epoch, machine.active, machine.fence = snap.epoch, snap.active, snap.fence
        return machine

    # -- internals ----------------------------------------------------------------------

    def _check_open(self, inp: Input) -> None:
        if self.state is State.CLOSED:
            raise TurnProtocolError(f"{inp.value} after the session closed")

    def _apply(self, inp: Input, *, started: int = 0, fence_to: int = 0) -> Decision:
        key = (self.state, inp)
        next_state, actions = _TRANSITIONS[key]
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
        return Decision(
            inp,
            actions,
            target=ended if Action.RECORD in actions else 0,
            committed=started,
            reason=_REASONS.get(key, inp.value),
            speculative=speculative and Action.RECORD in actions,
        )
