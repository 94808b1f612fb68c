"""The turn state machine (rspp.kernel.turns): the table, the numbers, speculation, invariants."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rspp.kernel import turns
from rspp.kernel.errors import TurnProtocolError
from rspp.kernel.turns import Action, Decision, Input, State, TurnMachine, TurnSnapshot

F, CL, CA, RE, RL, AD = (
    Action.FENCE,
    Action.CLEAR,
    Action.CANCEL,
    Action.RECORD,
    Action.RELEASE,
    Action.ADVANCE,
)
DROP = (F, CL, CA, RE)
CANONICAL_ORDER = (F, CL, CA, RE, RL, AD)
L, S, R, C = State.LISTENING, State.SPECULATING, State.RESPONDING, State.CLOSED


def numbers(m: TurnMachine) -> tuple[State, int, int, int, int]:
    """Everything observable about a machine: state, epoch, active, fence, held."""
    return m.state, m.epoch, m.active, m.fence, m.held


# -- setups ------------------------------------------------------------------------------


def listening_fresh() -> TurnMachine:
    return TurnMachine()


def listening_after_played_1() -> TurnMachine:
    """LISTENING with reply 1 committed, played and not fenced: epoch 2, fence 0."""
    m = TurnMachine()
    m.commit()
    m.played(1)
    return m


def responding_to_1() -> TurnMachine:
    m = TurnMachine()
    m.commit()
    return m


def speculating_on_1() -> TurnMachine:
    m = TurnMachine()
    m.speculate()
    return m


def test_setups() -> None:
    assert numbers(listening_fresh()) == (L, 1, 0, 0, 0)
    assert numbers(listening_after_played_1()) == (L, 2, 0, 0, 0)
    assert numbers(responding_to_1()) == (R, 2, 1, 0, 0)
    assert numbers(speculating_on_1()) == (S, 2, 1, 0, 1)


# -- the table in the module docstring -------------------------------------------------


def _docstring_rows() -> dict[tuple[State, Input], tuple[State, tuple[Action, ...]]]:
    doc = turns.__doc__
    assert doc is not None
    rows: dict[tuple[State, Input], tuple[State, tuple[Action, ...]]] = {}
    pattern = r"^(LISTENING|SPECULATING|RESPONDING)\s+([A-Z]+)\s+([A-Z]+)\s+(.*)$"
    for line in doc.splitlines():
        match = re.match(pattern, line)
        if match is None:
            continue
        state, inp, nxt, rest = match.groups()
        actions = () if rest.startswith("(") else tuple(Action[a] for a in rest.split())
        key = (State[state], Input[inp])
        assert key not in rows, f"row {state} {inp} appears twice"
        rows[key] = (State[nxt], actions)
    return rows


def test_docstring_table_matches_transition_table() -> None:
    rows = _docstring_rows()
    assert len(rows) == 18
    assert rows == turns._TRANSITIONS


def test_docstring_table_has_the_closed_row() -> None:
    doc = turns.__doc__
    assert doc is not None
    assert re.search(r"^CLOSED\s+any\s+--\s+TurnProtocolError\s*$", doc, re.MULTILINE)


def test_illegal_rows_are_not_in_the_table() -> None:
    for key in [(R, Input.SPECULATE), (L, Input.CONFIRM), (R, Input.CONFIRM)]:
        assert key not in turns._TRANSITIONS
    assert not any(state is C for state, _ in turns._TRANSITIONS)


def test_every_row_that_records_has_a_reason_and_no_other_row_does() -> None:
    recording = {key for key, (_, actions) in turns._TRANSITIONS.items() if RE in actions}
    assert set(turns._REASONS) == recording
    assert turns._REASONS == {
        (S, Input.COMMIT): "speculation_miss",
        (R, Input.COMMIT): "superseded",
        (S, Input.SPECULATE): "speculation_replaced",
        (R, Input.INTERRUPT): "barge_in",
        (S, Input.CANCEL): "speculation_discarded",
        (R, Input.CANCEL): "cancel",
        (S, Input.CLOSE): "closed",
        (R, Input.CLOSE): "closed",
    }


def test_every_row_is_in_the_canonical_order() -> None:
    for key, (_, actions) in turns._TRANSITIONS.items():
        positions = [CANONICAL_ORDER.index(a) for a in actions]
        assert positions == sorted(set(positions)), key


class Row(NamedTuple):
    setup: Callable[[], TurnMachine]
    apply: Callable[[TurnMachine], Decision]
    next_state: State
    actions: tuple[Action, ...]
    after: tuple[int, int, int, int]  # epoch, active, fence, held after the input
    target: int
    committed: int
    reason: str
    speculative: bool


TABLE: dict[str, Row] = {
    "LISTENING COMMIT": Row(
        listening_after_played_1,
        lambda m: m.commit(),
        R,
        (AD,),
        (3, 2, 0, 0),
        target=0,
        committed=2,
        reason="commit",
        speculative=False,
    ),
    "SPECULATING COMMIT": Row(
        speculating_on_1,
        lambda m: m.commit(),
        R,
        (*DROP, AD),
        (3, 2, 1, 0),
        target=1,
        committed=2,
        reason="speculation_miss",
        speculative=True,
    ),
    "RESPONDING COMMIT": Row(
        responding_to_1,
        lambda m: m.commit(),
        R,
        (*DROP, AD),
        (3, 2, 1, 0),
        target=1,
        committed=2,
        reason="superseded",
        speculative=False,
    ),
    "LISTENING SPECULATE": Row(
        listening_after_played_1,
        lambda m: m.speculate(),
        S,
        (AD,),
        (3, 2, 0, 2),
        target=0,
        committed=2,
        reason="speculate",
        speculative=False,
    ),
    "SPECULATING SPECULATE": Row(
        speculating_on_1,
        lambda m: m.speculate(),
        S,
        (*DROP, AD),
        (3, 2, 1, 2),
        target=1,
        committed=2,
        reason="speculation_replaced",
        speculative=True,
    ),
    "SPECULATING CONFIRM": Row(
        speculating_on_1,
        lambda m: m.confirm(1),
        R,
        (RL,),
        (2, 1, 0, 0),
        target=0,
        committed=1,
        reason="confirm",
        # ``speculative`` describes ``target``, and CONFIRM ends no reply.
        speculative=False,
    ),
    "LISTENING INTERRUPT": Row(
        listening_after_played_1,
        lambda m: m.interrupt(),
        L,
        (),
        (2, 0, 0, 0),
        target=0,
        committed=0,
        reason="nothing audible to interrupt",
        speculative=False,
    ),
    "SPECULATING INTERRUPT": Row(
        speculating_on_1,
        lambda m: m.interrupt(),
        S,
        (),
        (2, 1, 0, 1),
        target=0,
        committed=0,
        reason="nothing audible to interrupt",
        speculative=False,
    ),
    "RESPONDING INTERRUPT": Row(
        responding_to_1,
        lambda m: m.interrupt(),
        L,
        DROP,
        (2, 0, 1, 0),
        target=1,
        committed=0,
        reason="barge_in",
        speculative=False,
    ),
    "LISTENING CANCEL": Row(
        listening_after_played_1,
        lambda m: m.cancel(1),
        L,
        (F, CL, CA),
        (2, 0, 1, 0),
        target=0,
        committed=0,
        reason="cancel",
        speculative=False,
    ),
    "SPECULATING CANCEL": Row(
        speculating_on_1,
        lambda m: m.cancel(1),
        L,
        DROP,
        (2, 0, 1, 0),
        target=1,
        committed=0,
        reason="speculation_discarded",
        speculative=True,
    ),
    "RESPONDING CANCEL": Row(
        responding_to_1,
        lambda m: m.cancel(1),
        L,
        DROP,
        (2, 0, 1, 0),
        target=1,
        committed=0,
        reason="cancel",
        speculative=False,
    ),
    "LISTENING PLAYED": Row(
        listening_after_played_1,
        lambda m: m.played(1),
        L,
        (),
        (2, 0, 0, 0),
        target=0,
        committed=0,
        reason="stale",
        speculative=False,
    ),
    "SPECULATING PLAYED": Row(
        speculating_on_1,
        lambda m: m.played(1),
        S,
        (),
        (2, 1, 0, 1),
        target=0,
        committed=0,
        reason="stale",
        speculative=False,
    ),
    "RESPONDING PLAYED": Row(
        responding_to_1,
        lambda m: m.played(1),
        L,
        (),
        (2, 0, 0, 0),
        target=1,
        committed=0,
        reason="played",
        speculative=False,
    ),
    "LISTENING CLOSE": Row(
        listening_after_played_1,
        lambda m: m.close(),
        C,
        (F, CL, CA),
        (2, 0, 2, 0),
        target=0,
        committed=0,
        reason="close",
        speculative=False,
    ),
    "SPECULATING CLOSE": Row(
        speculating_on_1,
        lambda m: m.close(),
        C,
        DROP,
        (2, 0, 2, 0),
        target=1,
        committed=0,
        reason="closed",
        speculative=True,
    ),
    "RESPONDING CLOSE": Row(
        responding_to_1,
        lambda m: m.close(),
        C,
        DROP,
        (2, 0, 2, 0),
        target=1,
        committed=0,
        reason="closed",
        speculative=False,
    ),
}


def test_the_row_tests_cover_the_whole_table() -> None:
    covered = {(State[k.split()[0]], Input[k.split()[1]]) for k in TABLE}
    assert covered == set(turns._TRANSITIONS)
    for name, row in TABLE.items():
        state, inp = name.split()
        assert row.setup().state is State[state]
        assert turns._TRANSITIONS[(State[state], Input[inp])] == (row.next_state, row.actions)


@pytest.mark.parametrize("name", list(TABLE), ids=list(TABLE))
def test_transition_row(name: str) -> None:
    row = TABLE[name]
    machine = row.setup()
    decision = row.apply(machine)
    assert decision.input is Input[name.split()[1]]
    assert decision.actions == row.actions
    assert machine.state is row.next_state
    assert (machine.epoch, machine.active, machine.fence, machine.held) == row.after
    assert decision.target == row.target
    assert decision.committed == row.committed
    assert decision.reason == row.reason
    assert decision.speculative is row.speculative
    assert decision.accepted is bool(row.actions)


CLOSED_INPUTS: dict[str, Callable[[TurnMachine], Decision]] = {
    "commit": lambda m: m.commit(),
    "speculate": lambda m: m.speculate(),
    "confirm-epoch": lambda m: m.confirm(m.epoch),
    "confirm-1": lambda m: m.confirm(1),
    "interrupt": lambda m: m.interrupt(),
    "cancel": lambda m: m.cancel(1),
    "played": lambda m: m.played(1),
    "close": lambda m: m.close(),
}


@pytest.mark.parametrize("apply", list(CLOSED_INPUTS.values()), ids=list(CLOSED_INPUTS))
@pytest.mark.parametrize(
    "setup",
    [listening_fresh, listening_after_played_1, speculating_on_1, responding_to_1],
    ids=["from-fresh", "from-L", "from-S", "from-R"],
)
def test_every_input_after_close_raises(
    setup: Callable[[], TurnMachine], apply: Callable[[TurnMachine], Decision]
) -> None:
    machine = setup()
    machine.close()
    before = numbers(machine)
    with pytest.raises(TurnProtocolError, match="after the session closed"):
        apply(machine)
    assert numbers(machine) == before


# -- the kernel numbers replies ------------------------------------------------------------


def test_each_reply_root_takes_the_current_epoch() -> None:
    m = TurnMachine()
    d = m.speculate()
    assert d.committed == 1
    assert numbers(m) == (S, 2, 1, 0, 1)
    d = m.speculate()  # replaces 1
    assert (d.committed, d.target) == (2, 1)
    assert numbers(m) == (S, 3, 2, 1, 2)
    d = m.commit()  # a miss: a different transcript committed
    assert (d.committed, d.target) == (3, 2)
    assert numbers(m) == (R, 4, 3, 2, 0)
    m.played(3)
    d = m.commit()
    assert (d.committed, d.target, d.actions) == (4, 0, (AD,))
    assert numbers(m) == (R, 5, 4, 2, 0)


def test_a_confirmed_speculation_keeps_its_number() -> None:
    m = listening_after_played_1()
    m.speculate()
    assert m.held == 2
    d = m.confirm(2)
    assert (d.actions, d.committed, d.target) == ((RL,), 2, 0)
    assert numbers(m) == (R, 3, 2, 0, 0)  # the epoch does not move on a confirm
    d = m.played(2)
    assert (d.target, d.reason) == (2, "played")
    assert numbers(m) == (L, 3, 0, 0, 0)


def test_interrupt_fences_the_active_reply() -> None:
    m = listening_after_played_1()
    m.commit()
    d = m.interrupt()
    assert d.target == 2
    assert d.reason == "barge_in"
    assert m.is_fenced(1) and m.is_fenced(2) and not m.is_fenced(3)
    assert numbers(m) == (L, 3, 0, 2, 0)


def test_interrupt_of_a_confirmed_speculation_is_a_barge_in() -> None:
    m = speculating_on_1()
    m.confirm(1)
    d = m.interrupt()
    assert (d.actions, d.target, d.reason, d.speculative) == (DROP, 1, "barge_in", False)
    assert numbers(m) == (L, 2, 0, 1, 0)


def test_interrupt_while_speculating_leaves_the_speculation_alone() -> None:
    m = speculating_on_1()
    d = m.interrupt()
    assert not d.accepted
    assert (d.target, d.committed) == (0, 0)
    assert numbers(m) == (S, 2, 1, 0, 1)
    assert not m.is_fenced(1)


def test_supersede_fences_the_old_reply_and_starts_the_new() -> None:
    m = responding_to_1()
    d = m.commit()
    assert d.actions == (*DROP, AD)
    assert (d.target, d.committed, d.reason, d.speculative) == (1, 2, "superseded", False)
    assert m.is_fenced(1) and not m.is_fenced(2)


def test_a_speculation_miss_fences_the_speculation_only() -> None:
    m = listening_after_played_1()  # reply 1 played, not fenced
    m.speculate()  # 2
    d = m.commit()  # 3
    assert (d.target, d.committed, d.reason, d.speculative) == (2, 3, "speculation_miss", True)
    assert numbers(m) == (R, 4, 3, 2, 0)
    assert not m.is_fenced(3)


def test_close_fences_through_the_epoch() -> None:
    m = listening_after_played_1()
    m.commit()
    d = m.close()
    assert (d.target, d.reason) == (2, "closed")
    assert numbers(m) == (C, 3, 0, 3, 0)  # the unused number 3 too
    assert m.is_fenced(3) and not m.is_fenced(4)

    fresh = TurnMachine()
    d = fresh.close()
    assert (d.actions, d.target, d.reason) == ((F, CL, CA), 0, "close")
    assert numbers(fresh) == (C, 1, 0, 1, 0)


# -- guards -------------------------------------------------------------------------------


def test_speculate_while_responding_raises() -> None:
    for m in (responding_to_1(), speculating_on_1()):
        if m.state is S:
            m.confirm(1)
        before = numbers(m)
        assert before[0] is R
        with pytest.raises(TurnProtocolError, match="in progress"):
            m.speculate()
        assert numbers(m) == before


def test_confirm_of_anything_but_the_held_speculation_is_a_stale_no_op() -> None:
    cases: list[tuple[Callable[[], TurnMachine], int]] = [
        (listening_fresh, 1),  # nothing held
        (listening_after_played_1, 1),  # a committed, played reply
        (listening_after_played_1, 2),  # the epoch: not a reply yet
        (responding_to_1, 1),  # the committed reply in progress
        (speculating_on_1, 2),  # the epoch, not the held number
        (speculating_on_1, 0),
        (speculating_on_1, -1),
    ]
    for setup, turn in cases:
        m = setup()
        before = numbers(m)
        d = m.confirm(turn)
        assert d.input is Input.CONFIRM
        assert d.actions == ()
        assert not d.accepted
        assert (d.target, d.committed, d.speculative) == (0, 0, False)
        assert "not the held speculation" in d.reason
        assert numbers(m) == before, (setup.__name__, turn)


def test_confirm_of_a_replaced_or_dropped_or_confirmed_speculation_is_stale() -> None:
    replaced = speculating_on_1()
    replaced.speculate()  # 1 replaced by 2
    before = numbers(replaced)
    assert replaced.confirm(1).actions == ()
    assert numbers(replaced) == before == (S, 3, 2, 1, 2)

    dropped = speculating_on_1()
    dropped.cancel(1)
    before = numbers(dropped)
    assert dropped.confirm(1).actions == ()
    assert numbers(dropped) == before

    confirmed = speculating_on_1()
    confirmed.confirm(1)
    before = numbers(confirmed)
    assert confirmed.confirm(1).actions == ()  # twice: the second is stale
    assert numbers(confirmed) == before == (R, 2, 1, 0, 0)


def test_cancel_is_capped_to_numbers_given_to_replies() -> None:
    m = responding_to_1()  # epoch 2: number 2 belongs to no reply yet
    d = m.cancel(2)
    assert (d.actions, d.target) == (DROP, 1)
    assert numbers(m) == (L, 2, 0, 1, 0)
    assert not m.is_fenced(2)

    m = speculating_on_1()
    d = m.cancel(99)
    assert (d.actions, d.target, d.reason) == (DROP, 1, "speculation_discarded")
    assert numbers(m) == (L, 2, 0, 1, 0)

    m = listening_after_played_1()
    d = m.cancel(99)
    assert (d.actions, d.target) == ((F, CL, CA), 0)
    assert numbers(m) == (L, 2, 0, 1, 0)


def test_cancel_with_nothing_given_out_is_stale() -> None:
    m = TurnMachine()
    d = m.cancel(1)  # capped to epoch - 1 == 0, which is <= fence
    assert d.actions == ()
    assert not d.accepted
    assert numbers(m) == (L, 1, 0, 0, 0)


def test_cancel_of_an_already_fenced_turn_is_stale() -> None:
    m = responding_to_1()
    m.interrupt()
    before = numbers(m)
    for turn in (1, 0, -5):
        d = m.cancel(turn)
        assert d.actions == ()
        assert numbers(m) == before


def test_cancel_of_a_reply_older_than_the_active_one_only_raises_the_fence() -> None:
    m = listening_after_played_1()
    m.commit()  # active 2
    d = m.cancel(1)
    assert (d.actions, d.target, d.reason, d.committed) == ((F,), 1, "cancel", 0)
    assert numbers(m) == (R, 3, 2, 1, 0)
    assert not m.is_fenced(2)

    m = listening_after_played_1()
    m.speculate()  # held 2
    d = m.cancel(1)
    assert (d.actions, d.target) == ((F,), 1)
    assert d.speculative is False  # reply 1 was a committed reply
    assert numbers(m) == (S, 3, 2, 1, 2)
    assert m.confirm(2).actions == (RL,)  # the speculation is still good


def test_fence_never_moves_down_on_a_lower_target() -> None:
    m = TurnMachine()
    m.commit()
    m.interrupt()  # fence 1
    m.commit()  # 2
    m.played(2)
    m.commit()  # 3
    m.cancel(2)  # fences 2 only
    assert numbers(m) == (R, 4, 3, 2, 0)
    d = m.cancel(1)  # already fenced
    assert d.actions == ()
    assert m.fence == 2


def test_played_of_a_non_active_turn_is_stale() -> None:
    m = listening_after_played_1()
    m.commit()  # 2
    for turn in (1, 3, 0):
        d = m.played(turn)
        assert (d.actions, d.target, d.reason) == ((), 0, "stale")
        assert numbers(m) == (R, 3, 2, 0, 0)
    d = m.played(2)
    assert d.target == 2
    assert numbers(m) == (L, 3, 0, 0, 0)
    d = m.played(2)  # again: stale
    assert (d.target, d.reason) == (0, "stale")
    assert numbers(m) == (L, 3, 0, 0, 0)


def test_played_of_the_held_speculation_is_stale() -> None:
    m = speculating_on_1()
    d = m.played(1)  # nothing of it was played: it was held back
    assert (d.actions, d.target, d.reason) == ((), 0, "stale")
    assert numbers(m) == (S, 2, 1, 0, 1)


def test_held_is_the_active_reply_only_while_speculating() -> None:
    m = TurnMachine()
    assert m.held == 0
    m.speculate()
    assert m.held == m.active == 1
    m.confirm(1)
    assert (m.held, m.active) == (0, 1)
    m.played(1)
    assert (m.held, m.active) == (0, 0)
    m.speculate()
    assert m.held == 2
    m.close()
    assert m.held == 0


# -- snapshots ------------------------------------------------------------------------


def _replaced_speculation() -> TurnMachine:
    m = TurnMachine()
    m.speculate()
    m.speculate()  # fence 1, held 2
    return m


def _superseded() -> TurnMachine:
    m = TurnMachine()
    m.commit()
    m.commit()  # fence 1, active 2
    return m


def _closed() -> TurnMachine:
    m = responding_to_1()
    m.close()
    return m


@pytest.mark.parametrize(
    "setup",
    [
        listening_fresh,
        listening_after_played_1,
        responding_to_1,
        speculating_on_1,
        _replaced_speculation,
        _superseded,
        _closed,
    ],
)
def test_snapshot_restore_round_trip(setup: Callable[[], TurnMachine]) -> None:
    original = setup()
    snap = original.snapshot()
    assert snap.state == original.state.value
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=TurnSnapshot)
    assert wire == snap
    copy = TurnMachine.restore(wire)
    assert numbers(copy) == numbers(original)
    assert copy.snapshot() == snap
    if original.state is C:
        with pytest.raises(TurnProtocolError):
            copy.commit()
        return
    # Both behave identically afterwards.
    script: list[Callable[[TurnMachine], Decision]] = [
        lambda m: m.confirm(m.held),
        lambda m: m.interrupt(),
        lambda m: m.speculate(),
        lambda m: m.commit(),
        lambda m: m.cancel(m.active - 1),
        lambda m: m.played(m.active),
        lambda m: m.close(),
    ]
    for step in script:
        assert step(copy) == step(original)
        assert numbers(copy) == numbers(original)


def test_snapshot_of_a_speculation_keeps_it_held() -> None:
    copy = TurnMachine.restore(_replaced_speculation().snapshot())
    assert numbers(copy) == (S, 3, 2, 1, 2)
    d = copy.confirm(2)
    assert (d.actions, d.committed) == ((RL,), 2)


@pytest.mark.parametrize(
    "snap",
    [
        TurnSnapshot("speculating", epoch=3, active=2, fence=1),
        TurnSnapshot("responding", epoch=3, active=2, fence=0),
        TurnSnapshot("listening", epoch=3, active=0, fence=2),
        TurnSnapshot("closed", epoch=3, active=0, fence=3),
    ],
)
def test_a_consistent_snapshot_is_accepted(snap: TurnSnapshot) -> None:
    assert TurnMachine.restore(snap).snapshot() == snap


@pytest.mark.parametrize(
    "snap",
    [
        TurnSnapshot("responding", epoch=3, active=0, fence=0),  # responding to nothing
        TurnSnapshot("speculating", epoch=3, active=0, fence=0),  # holding nothing
        TurnSnapshot("responding", epoch=3, active=2, fence=2),  # active already fenced
        TurnSnapshot("speculating", epoch=3, active=2, fence=2),
        TurnSnapshot("responding", epoch=3, active=3, fence=0),  # active is not below epoch
        TurnSnapshot("speculating", epoch=3, active=3, fence=0),
        TurnSnapshot("speculating", epoch=3, active=5, fence=0),
        TurnSnapshot("responding", epoch=3, active=1, fence=0),  # a live reply is epoch - 1
        TurnSnapshot("listening", epoch=3, active=0, fence=3),  # the next reply born fenced
        TurnSnapshot("listening", epoch=3, active=2, fence=0),  # listening with an active turn
        TurnSnapshot("closed", epoch=3, active=2, fence=3),
        TurnSnapshot("listening", epoch=0, active=0, fence=0),  # epochs start at 1
        TurnSnapshot("listening", epoch=3, active=0, fence=4),  # fence ahead of the epoch
        TurnSnapshot("listening", epoch=3, active=0, fence=-1),
        TurnSnapshot("dreaming", epoch=3, active=0, fence=0),  # no such state
    ],
)
def test_an_inconsistent_snapshot_is_refused(snap: TurnSnapshot) -> None:
    with pytest.raises(TurnProtocolError):
        TurnMachine.restore(snap)


@pytest.mark.parametrize(
    "snap",
    [
        TurnSnapshot("listening", epoch=1, active=0, fence=0),
        TurnSnapshot("listening", epoch=3, active=0, fence=2),
        TurnSnapshot("listening", epoch=3, active=0, fence=3),
    ],
    ids=["fresh", "fence-below-epoch", "fence-at-epoch"],
)
def test_a_reply_started_after_a_restore_is_never_fenced_at_birth(snap: TurnSnapshot) -> None:
    """Restore refuses what it cannot continue from: a legal input must not lead from an
    accepted snapshot to a state whose own snapshot restore would refuse."""
    try:
        TurnMachine.restore(snap)
    except TurnProtocolError:
        return  # refusing it is fine too
    for start in (TurnMachine.commit, TurnMachine.speculate):
        m = TurnMachine.restore(snap)
        d = start(m)
        assert not m.is_fenced(d.committed), f"{snap} then {start.__name__}: reply {d.committed}"
        TurnMachine.restore(m.snapshot())  # and the state it leads to is one restore accepts


# -- properties --------------------------------------------------------------------------

_ARG = st.integers(min_value=-1, max_value=12)
_LIVE_OPS = [
    st.just(("commit", 0)),
    st.just(("speculate", 0)),
    st.just(("confirm_held", 0)),
    st.tuples(st.just("confirm"), _ARG),
    st.just(("interrupt", 0)),
    st.tuples(st.just("cancel"), _ARG),
    st.tuples(st.just("cancel_back"), st.integers(min_value=0, max_value=3)),
    st.just(("played_active", 0)),
    st.tuples(st.just("played"), _ARG),
]
# Close ends everything, so it is drawn about one time in twenty.
_OPS = st.one_of(*_LIVE_OPS, *_LIVE_OPS, st.just(("close", 0)))


def _apply(m: TurnMachine, op: str, arg: int) -> Decision:
    if op == "commit":
        return m.commit()
    if op == "speculate":
        return m.speculate()
    if op == "confirm_held":
        return m.confirm(m.held)
    if op == "confirm":
        return m.confirm(arg)
    if op == "interrupt":
        return m.interrupt()
    if op == "cancel":
        return m.cancel(arg)
    if op == "cancel_back":  # one of the last few numbers given to replies
        return m.cancel(m.epoch - 1 - arg)
    if op == "played_active":
        return m.played(m.active)
    if op == "played":
        return m.played(arg)
    assert op == "close"
    return m.close()


def _is_ordered_subsequence(actions: tuple[Action, ...]) -> bool:
    positions = [CANONICAL_ORDER.index(a) for a in actions]
    return positions == sorted(set(positions))


def test_subsequence_helper() -> None:
    assert _is_ordered_subsequence(())
    assert _is_ordered_subsequence((F, CA, AD))
    assert _is_ordered_subsequence((RL,))
    assert not _is_ordered_subsequence((CL, F))
    assert not _is_ordered_subsequence((F, F))
    assert not _is_ordered_subsequence((AD, RL))


@settings(max_examples=300, deadline=None)
@given(st.lists(_OPS, min_size=8, max_size=40))
# Rare under random draws: cancelling a played reply older than the one in progress.
@example([("commit", 0), ("played_active", 0), ("commit", 0), ("cancel_back", 1)])
@example([("commit", 0), ("played_active", 0), ("speculate", 0), ("cancel_back", 1)])
def test_invariants_under_random_inputs(ops: list[tuple[str, int]]) -> None:
    m = TurnMachine()
    for op, arg in ops:
        before = numbers(m)
        state0, epoch0, active0, fence0, held0 = before
        try:
            decision = _apply(m, op, arg)
        except TurnProtocolError:
            # An illegal input changes nothing; only these are illegal.
            assert numbers(m) == before
            assert state0 is C or (op == "speculate" and state0 is R), (op, before)
            continue
        assert state0 is not C, f"{op}({arg}) was accepted after close"
        # The numbers only move forward.
        assert m.fence >= fence0
        assert m.epoch >= epoch0
        assert _is_ordered_subsequence(decision.actions), decision.actions
        # active and held follow the state.
        assert (m.active == 0) is (m.state in (L, C))
        if m.state in (S, R):
            assert m.fence < m.active < m.epoch
            assert m.active == m.epoch - 1  # the reply in progress has the latest number
        assert m.held == (m.active if m.state is S else 0)
        if m.state is C:
            assert m.fence >= m.epoch
        else:
            assert m.epoch > m.fence  # new user input always belongs to an unfenced number
        # What a decision says.
        if decision.input in (Input.SPECULATE, Input.COMMIT):
            assert decision.committed == epoch0
            assert m.active == decision.committed
            assert m.epoch == decision.committed + 1
            assert decision.actions[-1] is AD
        elif decision.input is Input.CONFIRM and decision.accepted:
            assert decision.actions == (RL,)
            assert decision.committed == held0 != 0
            assert numbers(m) == (R, epoch0, held0, fence0, 0)
        else:
            assert decision.committed == 0
        if RE in decision.actions:
            assert decision.target == active0 != 0
            assert decision.speculative is (state0 is S)
        if F in decision.actions and decision.target:
            assert m.is_fenced(decision.target)
        if decision.input is Input.CANCEL:
            # A cancel fences nothing beyond its (capped) number.
            number = epoch0 - 1 - arg if op == "cancel_back" else arg
            assert m.fence == max(fence0, min(number, epoch0 - 1))
            assert m.active == (active0 if active0 > m.fence else 0)
        if not decision.actions and not (decision.input is Input.PLAYED and decision.target):
            assert numbers(m) == before  # ignored and stale inputs change nothing
    if m.state is C:
        for op, arg in [("commit", 0), ("speculate", 0), ("interrupt", 0), ("cancel", 1)]:
            with pytest.raises(TurnProtocolError):
                _apply(m, op, arg)
