"""The turn state machine (rspp.kernel.turns): the table, the numbers, and its invariants."""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspp.kernel import turns
from rspp.kernel.errors import TurnProtocolError
from rspp.kernel.turns import Action, Decision, Input, State, TurnMachine, TurnSnapshot

F, CL, CA, RE, AD = Action.FENCE, Action.CLEAR, Action.CANCEL, Action.RECORD, Action.ADVANCE
CANONICAL_ORDER = (F, CL, CA, RE, AD)


def numbers(m: TurnMachine) -> tuple[State, int, int, int]:
    return m.state, m.epoch, m.active, m.fence


def listening_fresh() -> TurnMachine:
    return TurnMachine()


def responding_to_1() -> TurnMachine:
    m = TurnMachine()
    m.commit(1)
    return m


def listening_after_played_1() -> TurnMachine:
    """LISTENING with turn 1 committed, played and not fenced: epoch 2, fence 0."""
    m = TurnMachine()
    m.commit(1)
    m.played(1)
    return m


# -- the table in the module docstring -------------------------------------------------


def test_docstring_table_matches_transition_table() -> None:
    doc = turns.__doc__
    assert doc is not None
    names = {s.name: s for s in State}
    rows: dict[tuple[State, Input], tuple[State, tuple[Action, ...]]] = {}
    for line in doc.splitlines():
        match = re.match(r"^(LISTENING|RESPONDING)\s+([A-Z]+)\s+([A-Z]+)\s+(.*)$", line)
        if match is None:
            continue
        state, inp, nxt, rest = match.groups()
        actions = () if rest.startswith("(") else tuple(Action[a] for a in rest.split())
        rows[(names[state], Input[inp])] = (names[nxt], actions)
    assert len(rows) == 10
    assert rows == turns._TRANSITIONS


# Each row: (setup, input applied, expected next state, expected actions, checks on numbers).
Row = tuple[
    Callable[[], TurnMachine],
    Callable[[TurnMachine], Decision],
    State,
    tuple[Action, ...],
    tuple[int, int, int],  # epoch, active, fence after the input
]

TABLE: dict[str, Row] = {
    "LISTENING COMMIT": (
        listening_fresh,
        lambda m: m.commit(1),
        State.RESPONDING,
        (AD,),
        (2, 1, 0),
    ),
    "RESPONDING COMMIT": (
        responding_to_1,
        lambda m: m.commit(2),
        State.RESPONDING,
        (F, CL, CA, RE, AD),
        (3, 2, 1),
    ),
    "LISTENING INTERRUPT": (
        listening_after_played_1,
        lambda m: m.interrupt(),
        State.LISTENING,
        (),
        (2, 0, 0),
    ),
    "RESPONDING INTERRUPT": (
        responding_to_1,
        lambda m: m.interrupt(),
        State.LISTENING,
        (F, CL, CA, RE),
        (2, 0, 1),
    ),
    "LISTENING CANCEL": (
        listening_after_played_1,
        lambda m: m.cancel(1),
        State.LISTENING,
        (F, CL, CA),
        (2, 0, 1),
    ),
    "RESPONDING CANCEL": (
        responding_to_1,
        lambda m: m.cancel(1),
        State.LISTENING,
        (F, CL, CA, RE),
        (2, 0, 1),
    ),
    "LISTENING PLAYED": (
        listening_after_played_1,
        lambda m: m.played(1),
        State.LISTENING,
        (),
        (2, 0, 0),
    ),
    "RESPONDING PLAYED": (
        responding_to_1,
        lambda m: m.played(1),
        State.LISTENING,
        (),
        (2, 0, 0),
    ),
    "LISTENING CLOSE": (
        listening_after_played_1,
        lambda m: m.close(),
        State.CLOSED,
        (F, CL, CA),
        (2, 0, 2),
    ),
    "RESPONDING CLOSE": (
        responding_to_1,
        lambda m: m.close(),
        State.CLOSED,
        (F, CL, CA, RE),
        (2, 0, 2),
    ),
}


@pytest.mark.parametrize("row", list(TABLE), ids=list(TABLE))
def test_transition_row(row: str) -> None:
    setup, apply, next_state, actions, (epoch, active, fence) = TABLE[row]
    machine = setup()
    decision = apply(machine)
    assert decision.input is Input[row.split()[1]]
    assert decision.actions == actions
    if decision.input is not Input.PLAYED:  # see test_played_of_the_active_turn_ends_the_reply
        assert decision.accepted is bool(actions)
    assert machine.state is next_state
    assert (machine.epoch, machine.active, machine.fence) == (epoch, active, fence)


@pytest.mark.parametrize(
    "apply",
    [
        lambda m: m.commit(m.epoch),
        lambda m: m.commit(1),
        lambda m: m.interrupt(),
        lambda m: m.cancel(1),
        lambda m: m.played(1),
        lambda m: m.close(),
    ],
    ids=["commit-epoch", "commit-1", "interrupt", "cancel", "played", "close"],
)
@pytest.mark.parametrize("setup", [listening_fresh, responding_to_1], ids=["from-L", "from-R"])
def test_every_input_after_close_raises(
    setup: Callable[[], TurnMachine], apply: Callable[[TurnMachine], Decision]
) -> None:
    machine = setup()
    machine.close()
    before = numbers(machine)
    with pytest.raises(TurnProtocolError):
        apply(machine)
    assert numbers(machine) == before


# -- targets and the numbers -------------------------------------------------------------


def test_commit_advances_epoch_and_makes_the_turn_active() -> None:
    m = TurnMachine()
    assert numbers(m) == (State.LISTENING, 1, 0, 0)
    d = m.commit(1)
    assert (d.committed, d.target) == (1, 0)
    assert numbers(m) == (State.RESPONDING, 2, 1, 0)
    m.played(1)
    d = m.commit(2)
    assert (d.committed, d.target, d.actions) == (2, 0, (AD,))
    assert numbers(m) == (State.RESPONDING, 3, 2, 0)


def test_interrupt_fences_the_active_turn() -> None:
    m = TurnMachine()
    m.commit(1)
    m.played(1)
    m.commit(2)
    d = m.interrupt()
    assert d.target == 2
    assert d.reason == "barge_in"
    assert m.fence == 2
    assert m.is_fenced(1) and m.is_fenced(2) and not m.is_fenced(3)
    assert numbers(m) == (State.LISTENING, 3, 0, 2)


def test_supersede_fences_the_old_reply_and_commits_the_new() -> None:
    m = TurnMachine()
    m.commit(1)
    d = m.commit(2)
    assert d.actions == (F, CL, CA, RE, AD)
    assert d.target == 1
    assert d.committed == 2
    assert d.reason == "superseded"
    assert numbers(m) == (State.RESPONDING, 3, 2, 1)
    assert m.is_fenced(1) and not m.is_fenced(2)


def test_cancel_of_the_active_reply_records_it() -> None:
    m = responding_to_1()
    d = m.cancel(1)
    assert (d.target, d.committed) == (1, 0)
    assert numbers(m) == (State.LISTENING, 2, 0, 1)


def test_cancel_of_an_older_finished_reply_only_fences_it() -> None:
    m = TurnMachine()
    m.commit(1)
    m.played(1)
    m.commit(2)
    d = m.cancel(1)
    assert d.actions == (F,)
    assert d.target == 1
    assert numbers(m) == (State.RESPONDING, 3, 2, 1)
    assert not m.is_fenced(2)


def test_cancel_of_an_uncommitted_turn_is_capped_to_the_last_committed() -> None:
    m = responding_to_1()  # epoch 2: turn 2 is not committed
    d = m.cancel(2)
    assert d.target == 1
    assert d.actions == (F, CL, CA, RE)
    assert m.fence == 1
    assert not m.is_fenced(2)

    m = listening_after_played_1()
    d = m.cancel(99)
    assert d.target == 1
    assert m.fence == 1
    assert m.epoch == 2


def test_cancel_with_nothing_committed_is_stale() -> None:
    m = TurnMachine()
    d = m.cancel(1)  # capped to epoch - 1 == 0, which is <= fence
    assert d.actions == ()
    assert not d.accepted
    assert numbers(m) == (State.LISTENING, 1, 0, 0)


def test_close_fences_through_the_epoch() -> None:
    m = TurnMachine()
    m.commit(1)
    m.played(1)
    m.commit(2)
    d = m.close()
    assert d.target == 2
    assert d.reason == "closed"
    assert m.fence == 3  # the uncommitted turn 3 too
    assert m.is_fenced(3) and not m.is_fenced(4)
    assert numbers(m) == (State.CLOSED, 3, 0, 3)

    fresh = TurnMachine()
    fresh.close()
    assert fresh.fence == 1
    assert fresh.is_fenced(1)


def test_fence_never_moves_down_on_a_lower_target() -> None:
    m = TurnMachine()
    m.commit(1)
    m.interrupt()  # fence 1
    m.commit(2)
    m.played(2)
    m.commit(3)  # active 3, fence 1
    m.cancel(2)  # fences 2 only
    assert numbers(m) == (State.RESPONDING, 4, 3, 2)
    d = m.cancel(1)  # already fenced
    assert d.actions == ()
    assert m.fence == 2


# -- illegal and stale inputs ------------------------------------------------------------


def test_commit_of_a_future_turn_raises() -> None:
    m = TurnMachine()
    with pytest.raises(TurnProtocolError, match="current turn is 1"):
        m.commit(2)
    assert numbers(m) == (State.LISTENING, 1, 0, 0)


def test_commit_of_an_already_committed_unfenced_turn_raises() -> None:
    m = listening_after_played_1()
    with pytest.raises(TurnProtocolError, match="already committed"):
        m.commit(1)
    m = responding_to_1()
    with pytest.raises(TurnProtocolError):
        m.commit(1)
    assert numbers(m) == (State.RESPONDING, 2, 1, 0)


def test_commit_of_a_fenced_turn_is_stale() -> None:
    m = responding_to_1()
    m.interrupt()
    before = numbers(m)
    d = m.commit(1)
    assert d.input is Input.COMMIT
    assert d.actions == ()
    assert (d.target, d.committed) == (0, 0)
    assert numbers(m) == before


def test_interrupt_while_listening_is_ignored() -> None:
    m = listening_after_played_1()
    d = m.interrupt()
    assert d.actions == ()
    assert not d.accepted
    assert numbers(m) == (State.LISTENING, 2, 0, 0)


def test_played_of_a_non_active_turn_is_stale() -> None:
    m = TurnMachine()
    m.commit(1)
    m.played(1)
    m.commit(2)
    for turn in (1, 3, 0):
        d = m.played(turn)
        assert d.actions == ()
        assert d.target == 0
        assert d.reason == "stale"
        assert numbers(m) == (State.RESPONDING, 3, 2, 0)
    d = m.played(2)
    assert d.target == 2
    assert numbers(m) == (State.LISTENING, 3, 0, 0)


def test_played_of_the_active_turn_ends_the_reply() -> None:
    m = responding_to_1()
    d = m.played(1)
    assert (d.input, d.actions, d.target, d.reason) == (Input.PLAYED, (), 1, "played")
    assert numbers(m) == (State.LISTENING, 2, 0, 0)
    # Played again: stale, nothing changes.
    d = m.played(1)
    assert (d.target, d.reason) == (0, "stale")
    assert numbers(m) == (State.LISTENING, 2, 0, 0)


def test_cancel_of_an_already_fenced_turn_is_stale() -> None:
    m = responding_to_1()
    m.interrupt()
    before = numbers(m)
    d = m.cancel(1)
    assert d.actions == ()
    assert numbers(m) == before


# -- snapshots ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [listening_fresh, responding_to_1, listening_after_played_1],
    ids=["fresh", "responding", "listening"],
)
def test_snapshot_restore_round_trip(setup: Callable[[], TurnMachine]) -> None:
    original = setup()
    original.commit(original.epoch)
    original.commit(original.epoch)  # a supersede: fence > 0
    snap = original.snapshot()
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=TurnSnapshot)
    assert wire == snap
    copy = TurnMachine.restore(wire)
    assert numbers(copy) == numbers(original)
    assert copy.snapshot() == snap
    # Both behave identically afterwards.
    for m in (original, copy):
        m.interrupt()
    assert numbers(copy) == numbers(original)


def test_snapshot_of_a_closed_machine_restores_closed() -> None:
    m = responding_to_1()
    m.close()
    copy = TurnMachine.restore(m.snapshot())
    assert copy.state is State.CLOSED
    with pytest.raises(TurnProtocolError):
        copy.interrupt()


# -- properties --------------------------------------------------------------------------

_OPS = st.one_of(
    st.just(("commit_epoch", 0)),
    st.tuples(st.just("commit"), st.integers(min_value=-1, max_value=12)),
    st.just(("interrupt", 0)),
    st.tuples(st.just("cancel"), st.integers(min_value=-1, max_value=12)),
    st.just(("played_active", 0)),
    st.tuples(st.just("played"), st.integers(min_value=-1, max_value=12)),
    st.just(("close", 0)),
)


def _apply(m: TurnMachine, op: str, arg: int) -> Decision:
    if op == "commit_epoch":
        return m.commit(m.epoch)
    if op == "commit":
        return m.commit(arg)
    if op == "interrupt":
        return m.interrupt()
    if op == "cancel":
        return m.cancel(arg)
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
    assert not _is_ordered_subsequence((CL, F))
    assert not _is_ordered_subsequence((F, F))


@settings(max_examples=300, deadline=None)
@given(st.lists(_OPS, max_size=40))
def test_invariants_under_random_inputs(ops: list[tuple[str, int]]) -> None:
    m = TurnMachine()
    for op, arg in ops:
        before = numbers(m)
        was_closed = m.state is State.CLOSED
        try:
            decision = _apply(m, op, arg)
        except TurnProtocolError:
            # An illegal input changes nothing.
            assert numbers(m) == before
            continue
        assert not was_closed, f"{op}({arg}) was accepted after close"
        _, epoch0, _, fence0 = before
        assert m.fence >= fence0
        assert m.epoch >= epoch0
        assert _is_ordered_subsequence(decision.actions), decision.actions
        if Action.ADVANCE in decision.actions:
            assert decision.committed == epoch0
            assert m.active == decision.committed
            assert m.epoch == decision.committed + 1
        else:
            assert decision.committed == 0
        if Action.FENCE in decision.actions:
            assert m.is_fenced(decision.target)
        if m.state is State.RESPONDING:
            assert m.active > m.fence
            assert m.active == m.epoch - 1
        else:
            assert m.active == 0
        if m.state is State.CLOSED:
            assert m.fence >= m.epoch
        else:
            # New user input always belongs to an unfenced turn.
            assert m.epoch > m.fence
    if m.state is State.CLOSED:
        for op, arg in [("commit_epoch", 0), ("interrupt", 0), ("cancel", 1), ("close", 0)]:
            with pytest.raises(TurnProtocolError):
                _apply(m, op, arg)


@pytest.mark.parametrize(
    "snap",
    [
        TurnSnapshot("responding", epoch=3, active=0, fence=0),  # responding to nothing
        TurnSnapshot("responding", epoch=3, active=1, fence=0),  # active is not epoch - 1
        TurnSnapshot("responding", epoch=3, active=2, fence=2),  # active already fenced
        TurnSnapshot("listening", epoch=3, active=2, fence=0),  # listening with an active turn
        TurnSnapshot("listening", epoch=0, active=0, fence=0),  # epochs start at 1
        TurnSnapshot("listening", epoch=3, active=0, fence=4),  # fence ahead of the epoch
        TurnSnapshot("dreaming", epoch=3, active=0, fence=0),  # no such state
    ],
)
def test_an_inconsistent_snapshot_is_refused(snap: TurnSnapshot) -> None:
    with pytest.raises(TurnProtocolError):
        TurnMachine.restore(snap)
