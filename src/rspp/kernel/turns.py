"""The turn state machine: epochs, replies, interruption and fencing.

Everything that decides *whether* an interruption happens and *which* output
it kills lives in this file. It does no I/O, knows no clock and no asyncio:
it is fed inputs (a commit, an interrupt request, a cancel, "played", close)
and returns a :class:`Decision` -- the ordered actions the session shell must
carry out. Illegal inputs raise :class:`TurnProtocolError`; the shell turns
that into a counted, logged drop.

Theory of operation
-------------------
A *turn* ``n`` is one user utterance and the bot's reply to it; events carry
its number. Three numbers describe the session:

``epoch``   the turn that new user input belongs to. It starts at 1 and moves
            to ``n + 1`` when turn ``n`` is committed, so input that arrives
            while the bot replies to ``n`` (a barge-in) is already turn ``n+1``.
``active``  the turn whose reply is being generated or played (RESPONDING), if any.
``fence``   the highest turn whose output is fenced. Every fenced-kind event
            of a turn ``<= fence`` is dropped wherever it is. It only grows.

States: LISTENING (no reply in progress), RESPONDING (a reply to ``active`` is
in progress), CLOSED. The transitions are the table ``_TRANSITIONS`` below:

===========  ===========  ===========  ====================================
state        input        next state   actions
===========  ===========  ===========  ====================================
LISTENING    COMMIT       RESPONDING   ADVANCE
RESPONDING   COMMIT       RESPONDING   FENCE CLEAR CANCEL RECORD ADVANCE
LISTENING    INTERRUPT    LISTENING    (ignored: nothing is being said)
RESPONDING   INTERRUPT    LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    CANCEL       LISTENING    FENCE CLEAR CANCEL
RESPONDING   CANCEL       LISTENING    FENCE CLEAR CANCEL RECORD
LISTENING    PLAYED       LISTENING    (stale)
RESPONDING   PLAYED       LISTENING    (only for the active turn)
LISTENING    CLOSE        CLOSED       FENCE CLEAR CANCEL
RESPONDING   CLOSE        CLOSED       FENCE CLEAR CANCEL RECORD
CLOSED       any          --           TurnProtocolError
===========  ===========  ===========  ====================================

Guards the table does not show: a commit of an already fenced turn, an
interrupt while LISTENING and ``played`` of a turn that is not active are
stale and do nothing; a cancel is capped to committed turns, and cancelling a
turn older than the active reply only raises the fence (the active reply goes
on, state unchanged).

The action order is the cancellation-first order: fence first (from that
instant no event of the turn is delivered anywhere), then clear the output
buffers, then cancel the generating work, then record what was delivered.
A new commit while a reply is in progress supersedes it (the user spoke again).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from rspp.kernel.errors import TurnProtocolError

__all__ = ["Action", "Decision", "Input", "State", "TurnMachine", "TurnSnapshot"]


class State(enum.Enum):
    LISTENING = "listening"
    RESPONDING = "responding"
    CLOSED = "closed"


class Input(enum.Enum):
    COMMIT = "commit"
    INTERRUPT = "interrupt"
    CANCEL = "cancel"
    PLAYED = "played"
    CLOSE = "close"


class Action(enum.Enum):
    FENCE = "fence"  # raise the fence to Decision.target
    CLEAR = "clear"  # tell every output to drop buffered audio of turns <= target
    CANCEL = "cancel"  # cancel in-flight work on turns <= target
    RECORD = "record"  # record what of the target's reply was delivered (turn.interrupted)
    ADVANCE = "advance"  # the committed turn becomes active; epoch moves past it


L, R, C = State.LISTENING, State.RESPONDING, State.CLOSED
F, CL, CA, RE, AD = Action.FENCE, Action.CLEAR, Action.CANCEL, Action.RECORD, Action.ADVANCE

_TRANSITIONS: dict[tuple[State, Input], tuple[State, tuple[Action, ...]]] = {
    (L, Input.COMMIT): (R, (AD,)),
    (R, Input.COMMIT): (R, (F, CL, CA, RE, AD)),
    (L, Input.INTERRUPT): (L, ()),
    (R, Input.INTERRUPT): (L, (F, CL, CA, RE)),
    (L, Input.CANCEL): (L, (F, CL, CA)),
    (R, Input.CANCEL): (L, (F, CL, CA, RE)),
    (L, Input.PLAYED): (L, ()),
    (R, Input.PLAYED): (L, ()),
    (L, Input.CLOSE): (C, (F, CL, CA)),
    (R, Input.CLOSE): (C, (F, CL, CA, RE)),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the shell must do, in order.

    ``target`` is the reply the actions are about (the one to RECORD); FENCE,
    CLEAR and CANCEL apply to every turn up to the machine's ``fence``.
    """

    input: Input
    actions: tuple[Action, ...]
    target: int = 0
    #: The turn committed by this input (ADVANCE), else 0.
    committed: int = 0
    reason: str = ""

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
    """Pure turn/interrupt logic. See the module docstring."""

    __slots__ = ("active", "epoch", "fence", "state")

    def __init__(self) -> None:
        self.state = State.LISTENING
        self.epoch = 1
        self.active = 0
        self.fence = 0

    # -- inputs -------------------------------------------------------------------------

    def commit(self, turn: int) -> Decision:
        """Turn ``turn`` ended; the bot will reply to it. ``turn`` must be the current epoch."""
        self._check_open(Input.COMMIT)
        if turn <= self.fence:
            return Decision(Input.COMMIT, (), reason=f"turn {turn} is already fenced")
        if turn != self.epoch:
            raise TurnProtocolError(
                f"commit of turn {turn}, but the current turn is {self.epoch}"
                + (" (already committed)" if turn < self.epoch else "")
            )
        superseded = self.active if self.state is State.RESPONDING else 0
        return self._apply(Input.COMMIT, target=superseded, committed=turn, reason="superseded")

    def interrupt(self) -> Decision:
        """A request to interrupt; accepted only while a reply is in progress."""
        self._check_open(Input.INTERRUPT)
        if self.state is State.LISTENING:
            return Decision(Input.INTERRUPT, (), reason="no reply in progress")
        return self._apply(Input.INTERRUPT, target=self.active, reason="barge_in")

    def cancel(self, turn: int) -> Decision:
        """Cancel the reply of ``turn`` and older. Only committed turns can be cancelled."""
        self._check_open(Input.CANCEL)
        target = min(turn, self.epoch - 1)
        if target <= self.fence:
            return Decision(
                Input.CANCEL, (), reason=f"turn {turn} is already fenced or uncommitted"
            )
        if self.state is State.RESPONDING and target < self.active:
            # Cancelling an older, finished reply: fence it, leave the active one alone.
            self.fence = target
            return Decision(Input.CANCEL, (F,), target=target, reason="cancel")
        return self._apply(Input.CANCEL, target=target, reason="cancel")

    def played(self, turn: int) -> Decision:
        """The reply of ``turn`` was played out completely."""
        self._check_open(Input.PLAYED)
        if self.state is State.RESPONDING and turn == self.active:
            self.state = State.LISTENING
            self.active = 0
            return Decision(Input.PLAYED, (), target=turn, reason="played")
        return Decision(Input.PLAYED, (), reason="stale")

    def close(self) -> Decision:
        """The session ends: fence everything, including the uncommitted turn."""
        self._check_open(Input.CLOSE)
        return self._apply(Input.CLOSE, target=self.active, reason="closed")

    # -- state ------------------------------------------------------------------------

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
        if state is State.RESPONDING:
            consistent = consistent and snap.fence < snap.active == snap.epoch - 1
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

    def _apply(self, inp: Input, *, target: int, committed: int = 0, reason: str) -> Decision:
        next_state, actions = _TRANSITIONS[(self.state, inp)]
        if Action.FENCE in actions:
            self.fence = max(self.fence, target)
        if Action.ADVANCE in actions:
            self.active = committed
            self.epoch = committed + 1
        elif next_state is not State.RESPONDING:
            self.active = 0
        if inp is Input.CLOSE:
            # Nothing of any turn may leave a closed session.
            self.fence = max(self.fence, self.epoch)
        self.state = next_state
        return Decision(inp, actions, target=target, committed=committed, reason=reason)
