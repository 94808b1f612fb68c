"""The turn state machine (rspp.kernel.turns): the table, the numbers, speculation, invariants."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

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
LIVE = (S, R)


def numbers(m: TurnMachine) -> tuple[State, int, int, int, int]:
    """Everything observable about a machine: state, epoch, active, fence, held."""
    return m.state, m.epoch, m.active, m.fence, m.held


def keeps_the_invariant(state: State, epoch: int, active: int, fence: int) -> bool:
    """The invariant of the module docstring, written out independently of turns.py."""
    if state is L:
        return epoch >= 1 and active == 0 and fence == epoch - 1
    if state in LIVE:
        return active >= 1 and active == epoch - 1 and fence == active - 1
    return epoch >= 1 and active == 0 and fence == epoch


def assert_invariant(m: TurnMachine) -> None:
    assert keeps_the_invariant(m.state, m.epoch, m.active, m.fence), numbers(m)
    assert m.held == (m.active if m.state is S else 0)
    assert m.responding == (m.active if m.state is R else 0)
    if m.state in LIVE:
        assert not m.is_fenced(m.active)  # the reply in progress is the one unfenced reply
        assert m.is_fenced(m.active - 1)
    if m.state is not C:
        assert not m.is_fenced(m.epoch)  # new user input always belongs to an unfenced number


# -- setups ------------------------------------------------------------------------------


def listening_fresh() -> TurnMachine:
    return TurnMachine()


def listening_after_played_1() -> TurnMachine:
    """LISTENING with reply 1 committed and played out (so fenced): epoch 2, fence 1."""
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


def responding_to_2() -> TurnMachine:
    """RESPONDING to reply 2, after reply 1 was played out: there is an older reply to name."""
    m = listening_after_played_1()
    m.commit()
    return m


def speculating_on_2() -> TurnMachine:
    """SPECULATING on reply 2, after reply 1 was played out."""
    m = listening_after_played_1()
    m.speculate()
    return m


def responding_to_confirmed_1() -> TurnMachine:
    m = speculating_on_1()
    m.confirm(1)
    return m


SETUPS: list[Callable[[], TurnMachine]] = [
    listening_fresh,
    listening_after_played_1,
    responding_to_1,
    speculating_on_1,
    responding_to_2,
    speculating_on_2,
    responding_to_confirmed_1,
]


def test_setups() -> None:
    assert numbers(listening_fresh()) == (L, 1, 0, 0, 0)
    assert numbers(listening_after_played_1()) == (L, 2, 0, 1, 0)
    assert numbers(responding_to_1()) == (R, 2, 1, 0, 0)
    assert numbers(speculating_on_1()) == (S, 2, 1, 0, 1)
    assert numbers(responding_to_2()) == (R, 3, 2, 1, 0)
    assert numbers(speculating_on_2()) == (S, 3, 2, 1, 2)
    assert numbers(responding_to_confirmed_1()) == (R, 2, 1, 0, 0)


@pytest.mark.parametrize("setup", SETUPS, ids=[s.__name__ for s in SETUPS])
def test_every_setup_keeps_the_invariant(setup: Callable[[], TurnMachine]) -> None:
    assert_invariant(setup())


def test_invariant_helper() -> None:
    assert keeps_the_invariant(L, 1, 0, 0)
    assert keeps_the_invariant(R, 3, 2, 1)
    assert keeps_the_invariant(S, 2, 1, 0)
    assert keeps_the_invariant(C, 3, 0, 3)
    assert not keeps_the_invariant(L, 3, 0, 1)  # an older reply never fenced
    assert not keeps_the_invariant(R, 3, 2, 0)
    assert not keeps_the_invariant(S, 3, 2, 2)  # the reply in progress fenced
    assert not keeps_the_invariant(C, 3, 0, 2)
    assert not keeps_the_invariant(L, 0, 0, -1)


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
    assert len(rows) == 24
    assert rows == turns._TRANSITIONS


def test_docstring_table_has_the_closed_row() -> None:
    doc = turns.__doc__
    assert doc is not None
    assert re.search(r"^CLOSED\s+any\s+--\s+TurnProtocolError\s*$", doc, re.MULTILINE)


def test_the_table_has_a_row_for_every_input_in_every_open_state_but_three() -> None:
    every = {(state, inp) for state in (L, S, R) for inp in Input}
    missing = every - set(turns._TRANSITIONS)
    # SPECULATE while RESPONDING is illegal; CONFIRM never reaches the table outside
    # SPECULATING (the guard makes it stale first).
    assert missing == {(R, Input.SPECULATE), (L, Input.CONFIRM), (R, Input.CONFIRM)}
    assert not any(state is C for state, _ in turns._TRANSITIONS)
    assert set(turns._TRANSITIONS) <= every


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
        (R, Input.CLEAR): "cleared",
        (S, Input.FAIL): "speculation_failed",
        (R, Input.FAIL): "failed",
        (S, Input.CLOSE): "closed",
        (R, Input.CLOSE): "closed",
    }


def test_every_row_is_in_the_canonical_order() -> None:
    for key, (_, actions) in turns._TRANSITIONS.items():
        positions = [CANONICAL_ORDER.index(a) for a in actions]
        assert positions == sorted(set(positions)), key


def test_every_row_that_ends_a_reply_fences_it() -> None:
    """A reply is over however it ends, and from that moment it is fenced."""
    for (state, inp), (nxt, actions) in turns._TRANSITIONS.items():
        ends_a_reply = state in LIVE and (nxt in (L, C) or AD in actions)
        if ends_a_reply:
            assert actions[0] is F, (state, inp)
            # Everything but playing out is recorded as turn.interrupted.
            assert (RE in actions) is (inp is not Input.PLAYED), (state, inp)
        else:
            assert RE not in actions, (state, inp)
        if not actions:
            assert nxt is state, (state, inp)  # an ignored row changes nothing
        assert (AD in actions) is (inp in (Input.COMMIT, Input.SPECULATE)), (state, inp)
        assert (RL in actions) is (inp is Input.CONFIRM), (state, inp)


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
        (3, 2, 1, 0),
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
        (3, 2, 1, 2),
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
        (2, 0, 1, 0),
        target=0,
        committed=0,
        reason="interrupt",
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
        reason="interrupt",
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
        (),
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
    "LISTENING CLEAR": Row(
        listening_after_played_1,
        lambda m: m.clear(1),
        L,
        (),
        (2, 0, 1, 0),
        target=0,
        committed=0,
        reason="clear",
        speculative=False,
    ),
    "SPECULATING CLEAR": Row(
        speculating_on_1,
        lambda m: m.clear(1),
        S,
        (),
        (2, 1, 0, 1),
        target=0,
        committed=0,
        reason="clear",
        speculative=False,
    ),
    "RESPONDING CLEAR": Row(
        responding_to_1,
        lambda m: m.clear(1),
        L,
        DROP,
        (2, 0, 1, 0),
        target=1,
        committed=0,
        reason="cleared",
        speculative=False,
    ),
    "LISTENING FAIL": Row(
        listening_after_played_1,
        lambda m: m.fail(1),
        L,
        (),
        (2, 0, 1, 0),
        target=0,
        committed=0,
        reason="failed",
        speculative=False,
    ),
    "SPECULATING FAIL": Row(
        speculating_on_1,
        lambda m: m.fail(1),
        L,
        DROP,
        (2, 0, 1, 0),
        target=1,
        committed=0,
        reason="speculation_failed",
        speculative=True,
    ),
    "RESPONDING FAIL": Row(
        responding_to_1,
        lambda m: m.fail(1),
        L,
        DROP,
        (2, 0, 1, 0),
        target=1,
        committed=0,
        reason="failed",
        speculative=False,
    ),
    "LISTENING PLAYED": Row(
        listening_after_played_1,
        lambda m: m.played(1),
        L,
        (),
        (2, 0, 1, 0),
        target=0,
        committed=0,
        reason="played",
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
        reason="played",
        speculative=False,
    ),
    "RESPONDING PLAYED": Row(
        responding_to_1,
        lambda m: m.played(1),
        L,
        (F, CA),
        (2, 0, 1, 0),
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


def _key(name: str) -> tuple[State, Input]:
    state, inp = name.split()
    return State[state], Input[inp]


def test_the_row_tests_cover_the_whole_table() -> None:
    assert len(TABLE) == 24
    assert {_key(name) for name in TABLE} == set(turns._TRANSITIONS)
    for name, row in TABLE.items():
        key = _key(name)
        assert row.setup().state is key[0]
        assert turns._TRANSITIONS[key] == (row.next_state, row.actions)


@pytest.mark.parametrize("name", list(TABLE), ids=list(TABLE))
def test_transition_row(name: str) -> None:
    row = TABLE[name]
    machine = row.setup()
    decision = row.apply(machine)
    assert decision.input is _key(name)[1]
    assert decision.actions == row.actions
    assert machine.state is row.next_state
    assert (machine.epoch, machine.active, machine.fence, machine.held) == row.after
    assert machine.responding == (machine.active if row.next_state is R else 0)
    assert decision.target == row.target
    assert decision.committed == row.committed
    assert decision.reason == row.reason
    assert decision.speculative is row.speculative
    assert decision.accepted is bool(row.actions)
    assert_invariant(machine)


@pytest.mark.parametrize("name", list(TABLE), ids=list(TABLE))
def test_every_input_goes_through_the_table(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its row, the input is illegal: no input method bypasses ``_TRANSITIONS``."""
    row = TABLE[name]
    state, inp = _key(name)
    machine = row.setup()
    before = numbers(machine)
    monkeypatch.delitem(turns._TRANSITIONS, (state, inp))
    with pytest.raises(TurnProtocolError, match=f"^{inp.value} while {state.value}"):
        row.apply(machine)
    assert numbers(machine) == before


def test_played_and_interrupt_take_their_actions_from_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(turns._TRANSITIONS, (R, Input.PLAYED), (L, (F, CL)))
    d = responding_to_1().played(1)
    assert (d.actions, d.target) == ((F, CL), 1)
    monkeypatch.setitem(turns._TRANSITIONS, (L, Input.INTERRUPT), (L, (CL,)))
    d = listening_fresh().interrupt()
    assert d.actions == (CL,)
    assert d.accepted


CLOSED_INPUTS: dict[str, Callable[[TurnMachine], Decision]] = {
    "commit": lambda m: m.commit(),
    "speculate": lambda m: m.speculate(),
    "confirm-epoch": lambda m: m.confirm(m.epoch),
    "confirm-1": lambda m: m.confirm(1),
    "interrupt": lambda m: m.interrupt(),
    "cancel": lambda m: m.cancel(1),
    "cancel-epoch": lambda m: m.cancel(m.epoch),
    "clear": lambda m: m.clear(1),
    "clear-epoch": lambda m: m.clear(m.epoch),
    "fail": lambda m: m.fail(1),
    "fail-stalled": lambda m: m.fail(1, reason="stalled"),
    "played": lambda m: m.played(1),
    "played-0": lambda m: m.played(0),
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


def test_accepted_is_whether_there_are_actions() -> None:
    assert Decision(Input.PLAYED, (F,), target=1).accepted
    assert Decision(Input.CONFIRM, (RL,)).accepted
    assert not Decision(Input.PLAYED, (), target=1).accepted
    assert not Decision(Input.CANCEL, ()).accepted


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
    assert numbers(m) == (L, 4, 0, 3, 0)
    d = m.commit()
    assert (d.committed, d.target, d.actions) == (4, 0, (AD,))
    assert numbers(m) == (R, 5, 4, 3, 0)


def test_a_confirmed_speculation_keeps_its_number() -> None:
    m = listening_after_played_1()
    m.speculate()
    assert m.held == 2
    d = m.confirm(2)
    assert (d.actions, d.committed, d.target) == ((RL,), 2, 0)
    assert numbers(m) == (R, 3, 2, 1, 0)  # the epoch does not move on a confirm
    d = m.played(2)
    assert (d.actions, d.target, d.reason) == ((F, CA), 2, "played")
    assert numbers(m) == (L, 3, 0, 2, 0)


def test_interrupt_fences_the_active_reply() -> None:
    m = responding_to_2()
    d = m.interrupt()
    assert d.target == 2
    assert d.reason == "barge_in"
    assert m.is_fenced(1) and m.is_fenced(2) and not m.is_fenced(3)
    assert numbers(m) == (L, 3, 0, 2, 0)


def test_interrupt_of_a_confirmed_speculation_is_a_barge_in() -> None:
    m = responding_to_confirmed_1()
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
    assert m.confirm(1).actions == (RL,)


def test_supersede_fences_the_old_reply_and_starts_the_new() -> None:
    m = responding_to_1()
    d = m.commit()
    assert d.actions == (*DROP, AD)
    assert (d.target, d.committed, d.reason, d.speculative) == (1, 2, "superseded", False)
    assert m.is_fenced(1) and not m.is_fenced(2)


def test_a_speculation_miss_fences_the_speculation_only() -> None:
    m = speculating_on_2()  # reply 1 played and fenced
    d = m.commit()  # 3
    assert (d.target, d.committed, d.reason, d.speculative) == (2, 3, "speculation_miss", True)
    assert numbers(m) == (R, 4, 3, 2, 0)
    assert not m.is_fenced(3)


def test_close_fences_through_the_epoch() -> None:
    m = responding_to_2()
    d = m.close()
    assert (d.target, d.reason) == (2, "closed")
    assert numbers(m) == (C, 3, 0, 3, 0)  # the unused number 3 too
    assert m.is_fenced(3) and not m.is_fenced(4)

    fresh = TurnMachine()
    d = fresh.close()
    assert (d.actions, d.target, d.reason) == ((F, CL, CA), 0, "close")
    assert numbers(fresh) == (C, 1, 0, 1, 0)


ENDINGS: dict[str, Callable[[TurnMachine], Decision]] = {
    "played": lambda m: m.played(2),
    "interrupt": lambda m: m.interrupt(),
    "cancel": lambda m: m.cancel(2),
    "clear": lambda m: m.clear(2),
    "fail": lambda m: m.fail(2),
    "fail-stalled": lambda m: m.fail(2, reason="stalled"),
    "superseded": lambda m: m.commit(),
}


@pytest.mark.parametrize("end", list(ENDINGS.values()), ids=list(ENDINGS))
def test_a_reply_is_fenced_however_it_ends_and_stays_over(
    end: Callable[[TurnMachine], Decision],
) -> None:
    m = responding_to_2()
    d = end(m)
    assert d.actions[0] is F
    assert d.target == 2
    assert m.fence == 2 and m.is_fenced(2) and not m.is_fenced(3)
    assert_invariant(m)
    # Late news of reply 2 is stale: it changes nothing.
    for late in (
        lambda m: m.played(2),
        lambda m: m.fail(2),
        lambda m: m.clear(2),
        lambda m: m.cancel(2),
        lambda m: m.confirm(2),
    ):
        before = numbers(m)
        assert late(m).actions == ()
        assert numbers(m) == before


# -- guards -------------------------------------------------------------------------------


def test_speculate_while_responding_raises() -> None:
    for m in (responding_to_1(), responding_to_2(), responding_to_confirmed_1()):
        before = numbers(m)
        assert before[0] is R
        with pytest.raises(
            TurnProtocolError, match=rf"^speculate while responding \(reply {m.active} is in"
        ):
            m.speculate()
        assert numbers(m) == before


def test_confirm_of_anything_but_the_held_speculation_is_a_stale_no_op() -> None:
    cases: list[tuple[Callable[[], TurnMachine], int]] = [
        (listening_fresh, 1),  # nothing held
        (listening_fresh, 0),
        (listening_after_played_1, 1),  # a committed, played reply
        (listening_after_played_1, 2),  # the epoch: not a reply yet
        (responding_to_1, 1),  # the committed reply in progress
        (responding_to_confirmed_1, 1),  # already confirmed
        (speculating_on_1, 2),  # the epoch, not the held number
        (speculating_on_1, 0),
        (speculating_on_1, -1),
        (speculating_on_2, 1),  # an older reply
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

    for drop in (
        lambda m: m.cancel(1),
        lambda m: m.fail(1),
        lambda m: m.commit(),
    ):
        dropped = speculating_on_1()
        drop(dropped)
        before = numbers(dropped)
        assert dropped.confirm(1).actions == ()
        assert numbers(dropped) == before

    confirmed = speculating_on_1()
    confirmed.confirm(1)
    before = numbers(confirmed)
    assert confirmed.confirm(1).actions == ()  # twice: the second is stale
    assert numbers(confirmed) == before == (R, 2, 1, 0, 0)


def test_cancel_reaches_the_active_reply_from_any_number_at_or_above_it() -> None:
    m = responding_to_1()  # epoch 2: number 2 belongs to no reply yet
    d = m.cancel(2)
    assert (d.actions, d.target, d.reason) == (DROP, 1, "cancel")
    assert numbers(m) == (L, 2, 0, 1, 0)
    assert not m.is_fenced(2)  # the fence stops at the reply that ended

    m = speculating_on_1()
    d = m.cancel(99)
    assert (d.actions, d.target, d.reason, d.speculative) == (
        DROP,
        1,
        "speculation_discarded",
        True,
    )
    assert numbers(m) == (L, 2, 0, 1, 0)
    assert not m.is_fenced(2)


@pytest.mark.parametrize("turn", [0, 1, 2, 3, 99, -1])
def test_cancel_while_listening_is_ignored(turn: int) -> None:
    """There is never an unfenced older reply to cancel."""
    for setup in (listening_fresh, listening_after_played_1):
        m = setup()
        before = numbers(m)
        d = m.cancel(turn)
        assert d.actions == ()
        assert not d.accepted
        assert (d.target, d.committed) == (0, 0)
        assert numbers(m) == before


@pytest.mark.parametrize("name", ["cancel", "clear"])
@pytest.mark.parametrize("turn", [1, 0, -5])
def test_cancel_or_clear_of_a_reply_older_than_the_active_one_is_stale(
    name: str, turn: int
) -> None:
    for setup in (responding_to_2, speculating_on_2):
        m = setup()
        before = numbers(m)
        d = getattr(m, name)(turn)
        assert d.input is Input[name.upper()]
        assert d.actions == ()
        assert (d.target, d.committed, d.speculative) == (0, 0, False)
        assert "not the reply in progress" in d.reason
        assert numbers(m) == before
        assert not m.is_fenced(2)
    m = speculating_on_2()
    getattr(m, name)(turn)
    assert m.confirm(2).actions == (RL,)  # the speculation is still good


def test_fence_never_moves_down() -> None:
    m = TurnMachine()
    m.commit()
    m.interrupt()  # fence 1
    m.commit()  # 2
    m.played(2)  # fence 2
    m.commit()  # 3
    assert numbers(m) == (R, 4, 3, 2, 0)
    for turn in (2, 1):
        d = m.cancel(turn)  # older than the active one: stale
        assert d.actions == ()
        assert numbers(m) == (R, 4, 3, 2, 0)
    m.cancel(3)
    assert numbers(m) == (L, 4, 0, 3, 0)


def test_played_of_a_non_active_turn_is_stale() -> None:
    m = responding_to_2()
    for turn in (1, 3, 0):
        d = m.played(turn)
        assert (d.actions, d.target, d.committed) == ((), 0, 0)
        assert "not the reply being played" in d.reason
        assert numbers(m) == (R, 3, 2, 1, 0)
    d = m.played(2)
    assert (d.actions, d.target, d.reason) == ((F, CA), 2, "played")
    assert d.accepted
    assert numbers(m) == (L, 3, 0, 2, 0)
    d = m.played(2)  # again: nothing is being played
    assert (d.actions, d.target) == ((), 0)
    assert numbers(m) == (L, 3, 0, 2, 0)


def test_played_fences_the_reply_played_out() -> None:
    m = responding_to_2()
    d = m.played(2)
    assert d == Decision(Input.PLAYED, (F, CA), target=2, committed=0, reason="played")
    assert m.is_fenced(2) and not m.is_fenced(3)


@pytest.mark.parametrize("turn", [1, 2, 0])
def test_played_of_the_held_speculation_is_stale(turn: int) -> None:
    m = speculating_on_1()
    d = m.played(turn)  # nothing of it was played: it was held back
    assert (d.actions, d.target) == ((), 0)
    assert numbers(m) == (S, 2, 1, 0, 1)


# -- CLEAR -------------------------------------------------------------------------------


@pytest.mark.parametrize("turn", [2, 3, 99])
def test_clear_ends_the_audible_reply(turn: int) -> None:
    m = responding_to_2()
    d = m.clear(turn)
    assert d.input is Input.CLEAR
    assert (d.actions, d.target, d.committed, d.reason, d.speculative) == (
        DROP,
        2,
        0,
        "cleared",
        False,
    )
    assert numbers(m) == (L, 3, 0, 2, 0)
    assert not m.is_fenced(3)  # the fence stops at the reply that ended


def test_clear_of_a_confirmed_speculation_ends_it() -> None:
    m = responding_to_confirmed_1()
    d = m.clear(1)
    assert (d.actions, d.target, d.reason, d.speculative) == (DROP, 1, "cleared", False)
    assert numbers(m) == (L, 2, 0, 1, 0)


@pytest.mark.parametrize("turn", [1, 2, 3, 99])
def test_clear_while_speculating_is_ignored(turn: int) -> None:
    """Nothing of a held speculation was sent, so a clear cannot have dropped any of it."""
    m = speculating_on_2()
    d = m.clear(turn)
    assert d.actions == ()
    assert not d.accepted
    assert (d.target, d.committed, d.speculative) == (0, 0, False)
    assert numbers(m) == (S, 3, 2, 1, 2)
    assert not m.is_fenced(2)
    assert m.confirm(2).actions == (RL,)


@pytest.mark.parametrize("turn", [0, 1, 2, 99])
def test_clear_while_listening_is_ignored(turn: int) -> None:
    for setup in (listening_fresh, listening_after_played_1):
        m = setup()
        before = numbers(m)
        d = m.clear(turn)
        assert (d.actions, d.target, d.committed) == ((), 0, 0)
        assert numbers(m) == before


# -- FAIL --------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["failed", "stalled", "moved"])
def test_fail_ends_the_committed_reply_with_its_reason(reason: str) -> None:
    m = responding_to_2()
    d = m.fail(2, reason=reason)
    assert d.input is Input.FAIL
    assert (d.actions, d.target, d.committed, d.reason, d.speculative) == (
        DROP,
        2,
        0,
        reason,
        False,
    )
    assert numbers(m) == (L, 3, 0, 2, 0)


def test_fail_reason_defaults_to_failed() -> None:
    assert responding_to_1().fail(1).reason == "failed"
    assert responding_to_1().fail(1, reason="").reason == "failed"


def test_fail_of_a_confirmed_speculation_is_a_committed_reply_failing() -> None:
    m = responding_to_confirmed_1()
    d = m.fail(1, reason="stalled")
    assert (d.actions, d.target, d.reason, d.speculative) == (DROP, 1, "stalled", False)
    assert numbers(m) == (L, 2, 0, 1, 0)


@pytest.mark.parametrize("reason", ["failed", "stalled", "moved", ""])
def test_fail_of_a_held_speculation_is_speculation_failed(reason: str) -> None:
    m = speculating_on_2()
    d = m.fail(2, reason=reason)
    assert (d.actions, d.target, d.committed, d.reason, d.speculative) == (
        DROP,
        2,
        0,
        "speculation_failed",
        True,
    )
    assert numbers(m) == (L, 3, 0, 2, 0)


@pytest.mark.parametrize("turn", [1, 3, 0, -1, 99])
def test_fail_names_exactly_the_active_reply(turn: int) -> None:
    for setup in (responding_to_2, speculating_on_2):
        m = setup()
        before = numbers(m)
        d = m.fail(turn, reason="stalled")
        assert (d.actions, d.target, d.committed, d.speculative) == ((), 0, 0, False)
        assert "not the reply in progress" in d.reason
        assert numbers(m) == before


@pytest.mark.parametrize("turn", [0, 1, 2])
def test_fail_while_listening_is_ignored(turn: int) -> None:
    for setup in (listening_fresh, listening_after_played_1):
        m = setup()
        before = numbers(m)
        d = m.fail(turn, reason="moved")
        assert (d.actions, d.target, d.committed) == ((), 0, 0)
        assert numbers(m) == before


# -- held and responding ----------------------------------------------------------------


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


def test_responding_is_the_active_reply_only_while_responding() -> None:
    m = TurnMachine()
    assert m.responding == 0
    m.speculate()
    assert (m.responding, m.active) == (0, 1)
    m.confirm(1)
    assert m.responding == m.active == 1
    m.commit()
    assert m.responding == 2
    m.clear(2)
    assert (m.responding, m.active) == (0, 0)
    m.commit()
    assert m.responding == 3
    m.close()
    assert m.responding == 0


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


def _cleared() -> TurnMachine:
    m = responding_to_2()
    m.clear(2)
    return m


def _failed_speculation() -> TurnMachine:
    m = speculating_on_2()
    m.fail(2)
    return m


def _closed() -> TurnMachine:
    m = responding_to_1()
    m.close()
    return m


def _closed_fresh() -> TurnMachine:
    m = TurnMachine()
    m.close()
    return m


SNAPSHOT_SETUPS: list[Callable[[], TurnMachine]] = [
    *SETUPS,
    _replaced_speculation,
    _superseded,
    _cleared,
    _failed_speculation,
    _closed,
    _closed_fresh,
]

_AFTER_RESTORE: list[Callable[[TurnMachine], Decision]] = [
    lambda m: m.confirm(m.held),
    lambda m: m.clear(m.responding),
    lambda m: m.interrupt(),
    lambda m: m.speculate(),
    lambda m: m.commit(),
    lambda m: m.cancel(m.active - 1),
    lambda m: m.fail(m.active, reason="moved"),
    lambda m: m.speculate(),
    lambda m: m.fail(m.active),
    lambda m: m.commit(),
    lambda m: m.played(m.active),
    lambda m: m.close(),
]


def _outcome(m: TurnMachine, step: Callable[[TurnMachine], Decision]) -> Decision | str:
    try:
        return step(m)
    except TurnProtocolError as exc:
        return f"raised: {exc}"


@pytest.mark.parametrize("setup", SNAPSHOT_SETUPS, ids=[s.__name__ for s in SNAPSHOT_SETUPS])
def test_snapshot_restore_round_trip(setup: Callable[[], TurnMachine]) -> None:
    original = setup()
    snap = original.snapshot()
    assert snap == TurnSnapshot(
        original.state.value, original.epoch, original.active, original.fence
    )
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=TurnSnapshot)
    assert wire == snap
    copy = TurnMachine.restore(wire)
    assert numbers(copy) == numbers(original)
    assert copy.responding == original.responding
    assert copy.snapshot() == snap
    # Both behave identically afterwards, errors included.
    for step in _AFTER_RESTORE:
        assert _outcome(copy, step) == _outcome(original, step)
        assert numbers(copy) == numbers(original)
    assert copy.state is C


def test_snapshot_of_a_speculation_keeps_it_held() -> None:
    copy = TurnMachine.restore(_replaced_speculation().snapshot())
    assert numbers(copy) == (S, 3, 2, 1, 2)
    d = copy.confirm(2)
    assert (d.actions, d.committed) == ((RL,), 2)


def test_a_restored_closed_machine_stays_closed() -> None:
    copy = TurnMachine.restore(_closed().snapshot())
    for apply in CLOSED_INPUTS.values():
        with pytest.raises(TurnProtocolError, match="after the session closed"):
            apply(copy)


CONSISTENT = [
    TurnSnapshot("listening", epoch=1, active=0, fence=0),
    TurnSnapshot("listening", epoch=3, active=0, fence=2),
    TurnSnapshot("speculating", epoch=3, active=2, fence=1),
    TurnSnapshot("speculating", epoch=2, active=1, fence=0),
    TurnSnapshot("responding", epoch=3, active=2, fence=1),
    TurnSnapshot("responding", epoch=2, active=1, fence=0),
    TurnSnapshot("closed", epoch=1, active=0, fence=1),
    TurnSnapshot("closed", epoch=3, active=0, fence=3),
]

INCONSISTENT = [
    TurnSnapshot("responding", epoch=3, active=0, fence=0),  # responding to nothing
    TurnSnapshot("speculating", epoch=3, active=0, fence=0),  # holding nothing
    TurnSnapshot("responding", epoch=3, active=0, fence=2),
    TurnSnapshot("responding", epoch=3, active=2, fence=2),  # active already fenced
    TurnSnapshot("speculating", epoch=3, active=2, fence=2),
    TurnSnapshot("responding", epoch=3, active=2, fence=0),  # an older reply never fenced
    TurnSnapshot("speculating", epoch=3, active=2, fence=0),
    TurnSnapshot("responding", epoch=3, active=3, fence=2),  # active is not below epoch
    TurnSnapshot("speculating", epoch=3, active=3, fence=2),
    TurnSnapshot("speculating", epoch=3, active=5, fence=4),
    TurnSnapshot("responding", epoch=3, active=1, fence=0),  # a live reply is epoch - 1
    TurnSnapshot("responding", epoch=1, active=0, fence=-1),
    TurnSnapshot("listening", epoch=3, active=0, fence=3),  # the next reply born fenced
    TurnSnapshot("listening", epoch=3, active=0, fence=1),  # an older reply never fenced
    TurnSnapshot("listening", epoch=3, active=0, fence=0),
    TurnSnapshot("listening", epoch=3, active=2, fence=2),  # listening with an active turn
    TurnSnapshot("listening", epoch=0, active=0, fence=-1),  # epochs start at 1
    TurnSnapshot("listening", epoch=0, active=0, fence=0),
    TurnSnapshot("listening", epoch=3, active=0, fence=4),  # fence ahead of the epoch
    TurnSnapshot("closed", epoch=3, active=2, fence=3),
    TurnSnapshot("closed", epoch=3, active=0, fence=2),  # the unused number not fenced
    TurnSnapshot("closed", epoch=3, active=0, fence=4),
    TurnSnapshot("closed", epoch=0, active=0, fence=0),
    TurnSnapshot("dreaming", epoch=3, active=0, fence=2),  # no such state
    TurnSnapshot("LISTENING", epoch=3, active=0, fence=2),  # states are spelled by value
]


@pytest.mark.parametrize("snap", CONSISTENT)
def test_a_consistent_snapshot_is_accepted(snap: TurnSnapshot) -> None:
    restored = TurnMachine.restore(snap)
    assert restored.snapshot() == snap
    assert_invariant(restored)
    loaded = responding_to_2()
    assert loaded.load(snap) is None
    assert loaded.snapshot() == snap


@pytest.mark.parametrize("snap", INCONSISTENT)
def test_an_inconsistent_snapshot_is_refused(snap: TurnSnapshot) -> None:
    with pytest.raises(TurnProtocolError, match="snapshot"):
        TurnMachine.restore(snap)


@pytest.mark.parametrize("snap", INCONSISTENT)
def test_a_refused_load_leaves_the_machine_as_it_was(snap: TurnSnapshot) -> None:
    for setup in (responding_to_2, speculating_on_2, listening_after_played_1, _closed):
        m = setup()
        before = numbers(m)
        with pytest.raises(TurnProtocolError):
            m.load(snap)
        assert numbers(m) == before


def test_load_replaces_the_state_in_place() -> None:
    m = responding_to_2()
    m.load(TurnSnapshot("speculating", epoch=6, active=5, fence=4))
    assert numbers(m) == (S, 6, 5, 4, 5)
    assert m.confirm(5).actions == (RL,)
    # Even a closed machine takes a snapshot and goes on from it.
    m.close()
    m.load(TurnSnapshot("listening", epoch=7, active=0, fence=6))
    d = m.commit()
    assert (d.actions, d.committed) == ((AD,), 7)
    assert numbers(m) == (R, 8, 7, 6, 0)


def test_restore_is_a_classmethod_that_builds_the_class_it_is_called_on() -> None:
    class Traced(TurnMachine):
        __slots__ = ()

    snap = TurnSnapshot("responding", epoch=3, active=2, fence=1)
    restored = Traced.restore(snap)
    assert type(restored) is Traced
    assert restored.snapshot() == snap


_SNAP_STATES = st.sampled_from(["listening", "speculating", "responding", "closed", "dreaming"])
_SNAP_INTS = st.integers(min_value=-2, max_value=6)


@settings(max_examples=400, deadline=None)
@given(st.builds(TurnSnapshot, _SNAP_STATES, _SNAP_INTS, _SNAP_INTS, _SNAP_INTS))
@example(TurnSnapshot("responding", epoch=3, active=2, fence=0))  # the old rule took this
@example(TurnSnapshot("listening", epoch=3, active=0, fence=1))
def test_restore_accepts_exactly_the_snapshots_that_keep_the_invariant(
    snap: TurnSnapshot,
) -> None:
    valid = snap.state in {s.value for s in State} and keeps_the_invariant(
        State(snap.state), snap.epoch, snap.active, snap.fence
    )
    if valid:
        assert TurnMachine.restore(snap).snapshot() == snap
    else:
        with pytest.raises(TurnProtocolError):
            TurnMachine.restore(snap)


@pytest.mark.parametrize("snap", [s for s in CONSISTENT if s.state != "closed"])
def test_a_reply_started_after_a_restore_is_never_fenced_at_birth(snap: TurnSnapshot) -> None:
    """Restore refuses what it cannot continue from: a legal input must not lead from an
    accepted snapshot to a state whose own snapshot restore would refuse."""
    for start in (TurnMachine.commit, TurnMachine.speculate):
        m = TurnMachine.restore(snap)
        if start is TurnMachine.speculate and m.state is R:
            continue  # illegal while responding
        d = start(m)
        assert not m.is_fenced(d.committed), f"{snap} then {start.__name__}: reply {d.committed}"
        TurnMachine.restore(m.snapshot())  # and the state it leads to is one restore accepts


# -- properties --------------------------------------------------------------------------

_ARG = st.integers(min_value=-1, max_value=12)
_BACK = st.integers(min_value=-2, max_value=2)
_REASON = st.sampled_from(["failed", "stalled", "moved", ""])
_LIVE_OPS = [
    st.just(("commit", 0, "")),
    st.just(("speculate", 0, "")),
    st.just(("confirm_held", 0, "")),
    st.tuples(st.just("confirm"), _ARG, st.just("")),
    st.just(("interrupt", 0, "")),
    st.tuples(st.just("cancel"), _ARG, st.just("")),
    st.tuples(st.just("cancel_near"), _BACK, st.just("")),
    st.tuples(st.just("clear"), _ARG, st.just("")),
    st.tuples(st.just("clear_near"), _BACK, st.just("")),
    st.tuples(st.just("fail"), _ARG, _REASON),
    st.tuples(st.just("fail_near"), _BACK, _REASON),
    st.just(("played_active", 0, "")),
    st.tuples(st.just("played"), _ARG, st.just("")),
]
# Close ends everything, so it is drawn about one time in twenty-seven.
_OPS = st.one_of(*_LIVE_OPS, *_LIVE_OPS, st.just(("close", 0, "")))


def _turn_of(m: TurnMachine, op: str, arg: int) -> int:
    """The turn an op names: ``*_near`` ops name a number near the reply in progress."""
    if op == "played_active":
        return m.active
    if op == "confirm_held":
        return m.held
    return m.active + arg if op.endswith("_near") else arg


def _apply(m: TurnMachine, op: str, arg: int, reason: str = "") -> Decision:
    turn = _turn_of(m, op, arg)
    base = op.removesuffix("_near")
    if base == "commit":
        return m.commit()
    if base == "speculate":
        return m.speculate()
    if base == "confirm_held":
        return m.confirm(turn)
    if base == "confirm":
        return m.confirm(turn)
    if base == "interrupt":
        return m.interrupt()
    if base == "cancel":
        return m.cancel(turn)
    if base == "clear":
        return m.clear(turn)
    if base == "fail":
        return m.fail(turn, reason=reason) if reason else m.fail(turn)
    if base == "played_active":
        return m.played(turn)
    if base == "played":
        return m.played(turn)
    assert base == "close"
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


def test_apply_helper_names_turns_near_the_active_reply() -> None:
    m = responding_to_2()
    assert _turn_of(m, "cancel_near", -1) == 1
    assert _turn_of(m, "cancel", -1) == -1
    assert _apply(m, "fail_near", 1, "stalled").actions == ()
    d = _apply(m, "fail_near", 0, "stalled")
    assert (d.input, d.target, d.reason) == (Input.FAIL, 2, "stalled")


@settings(max_examples=400, deadline=None)
@given(st.lists(_OPS, min_size=8, max_size=40))
# Naming a reply older than the one in progress (stale since the redesign).
@example([("commit", 0, ""), ("played_active", 0, ""), ("commit", 0, ""), ("cancel_near", -1, "")])
@example(
    [("commit", 0, ""), ("played_active", 0, ""), ("speculate", 0, ""), ("clear_near", -1, "")]
)
@example([("speculate", 0, ""), ("confirm_held", 0, ""), ("fail_near", 0, "moved")])
@example([("commit", 0, ""), ("speculate", 0, "")])
def test_invariants_under_random_inputs(ops: list[tuple[str, int, str]]) -> None:
    m = TurnMachine()
    for op, arg, reason in ops:
        before = numbers(m)
        state0, epoch0, active0, fence0, held0 = before
        turn = _turn_of(m, op, arg)
        try:
            decision = _apply(m, op, arg, reason)
        except TurnProtocolError:
            # An illegal input changes nothing; only these are illegal.
            assert numbers(m) == before
            assert state0 is C or (op == "speculate" and state0 is R), (op, before)
            continue
        assert state0 is not C, f"{op}({arg}) was accepted after close"
        # The invariant, and the numbers only move forward.
        assert_invariant(m)
        assert m.fence >= fence0
        assert m.epoch >= epoch0
        assert _is_ordered_subsequence(decision.actions), decision.actions
        # An input changes something exactly when the shell has something to do.
        assert decision.accepted is bool(decision.actions)
        assert decision.accepted is (numbers(m) != before), (op, arg, before)
        if not decision.accepted:
            assert (decision.target, decision.committed, decision.speculative) == (0, 0, False)
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
        if F in decision.actions:
            assert m.is_fenced(active0) and m.fence >= active0
        if decision.target:
            assert m.is_fenced(decision.target)
            assert decision.target == active0
        # Which inputs end the reply in progress.
        live = state0 in LIVE
        ends = {
            Input.INTERRUPT: state0 is R,
            Input.CANCEL: live and turn >= active0,
            Input.CLEAR: state0 is R and turn >= active0,
            Input.FAIL: live and turn == active0,
            Input.PLAYED: state0 is R and turn == active0,
        }.get(decision.input)
        if ends is not None:
            assert decision.accepted is ends, (op, turn, before)
            if ends:
                assert numbers(m) == (L, epoch0, 0, active0, 0)
                assert decision.target == active0
        if decision.input is Input.FAIL and decision.accepted:
            expected = "speculation_failed" if state0 is S else (reason or "failed")
            assert decision.reason == expected
        if decision.input is Input.CLOSE:
            assert (m.state, m.fence) == (C, epoch0)
    if m.state is C:
        for op, arg, reason in [
            ("commit", 0, ""),
            ("speculate", 0, ""),
            ("interrupt", 0, ""),
            ("cancel", 1, ""),
            ("clear", 1, ""),
            ("fail", 1, "stalled"),
            ("played_active", 0, ""),
            ("confirm_held", 0, ""),
        ]:
            with pytest.raises(TurnProtocolError):
                _apply(m, op, arg, reason)


# -- a model of the docstring, checked step by step -------------------------------------


class Expected(NamedTuple):
    actions: tuple[Action, ...]
    target: int = 0
    committed: int = 0
    reason: str | None = None  # None: not checked (an ignored or stale input)
    speculative: bool = False


_IGNORED = Expected(())


@dataclass
class Model:
    """The turn machine as the module docstring describes it, written independently."""

    state: State = L
    epoch: int = 1
    active: int = 0
    fence: int = 0

    def numbers(self) -> tuple[State, int, int, int, int]:
        return self.state, self.epoch, self.active, self.fence, self.active * (self.state is S)

    def step(self, inp: Input, turn: int = 0, reason: str = "failed") -> Expected:
        """What ``inp`` does; raises TurnProtocolError (changing nothing) where it is illegal."""
        if self.state is C:
            raise TurnProtocolError("after close")
        live, was_speculative = self.state in LIVE, self.state is S
        if inp is Input.CONFIRM:
            if self.state is not S or turn != self.active:
                return _IGNORED
            self.state = R
            return Expected((RL,), committed=self.active, reason="confirm")
        if inp in (Input.COMMIT, Input.SPECULATE):
            if inp is Input.SPECULATE and self.state is R:
                raise TurnProtocolError("speculate while responding")
            started, ended = self.epoch, self.active
            self.fence = max(self.fence, ended)
            self.active, self.epoch = started, started + 1
            self.state = R if inp is Input.COMMIT else S
            if not live:
                return Expected((AD,), committed=started, reason=inp.value)
            why = {
                (S, Input.COMMIT): "speculation_miss",
                (R, Input.COMMIT): "superseded",
                (S, Input.SPECULATE): "speculation_replaced",
            }
            key = (S if was_speculative else R, inp)
            return Expected((*DROP, AD), ended, started, why[key], was_speculative)
        if inp is Input.CLOSE:
            ended = self.active
            self.state, self.active, self.fence = C, 0, self.epoch
            if not live:
                return Expected((F, CL, CA), reason="close")
            return Expected(DROP, ended, reason="closed", speculative=was_speculative)
        ends = {
            Input.INTERRUPT: self.state is R,
            Input.CANCEL: live and turn >= self.active,
            Input.CLEAR: self.state is R and turn >= self.active,
            Input.FAIL: live and turn == self.active,
            Input.PLAYED: self.state is R and turn == self.active,
        }[inp]
        if not ends:
            return _IGNORED
        ended = self.active
        self.state, self.active, self.fence = L, 0, ended
        if inp is Input.PLAYED:
            return Expected((F, CA), ended, reason="played")
        if was_speculative:
            why = {Input.CANCEL: "speculation_discarded", Input.FAIL: "speculation_failed"}[inp]
        else:
            why = {
                Input.INTERRUPT: "barge_in",
                Input.CANCEL: "cancel",
                Input.CLEAR: "cleared",
                Input.FAIL: reason or "failed",
            }[inp]
        return Expected(DROP, ended, reason=why, speculative=was_speculative)


_BASES = st.sampled_from(["active", "epoch", "fence", "zero"])
_DELTAS = st.integers(min_value=-2, max_value=2)


class TurnsAgainstTheDocstring(RuleBasedStateMachine):
    """Every input, in any order, against the model; the invariant after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = TurnMachine()
        self.model = Model()

    def _turn(self, base: str, delta: int) -> int:
        m = self.machine
        return {"active": m.active, "epoch": m.epoch, "fence": m.fence, "zero": 0}[base] + delta

    def _check(
        self,
        call: Callable[[TurnMachine], Decision],
        inp: Input,
        turn: int = 0,
        reason: str = "failed",
    ) -> None:
        before = numbers(self.machine)
        assert before == self.model.numbers()
        try:
            expected = self.model.step(inp, turn, reason)
        except TurnProtocolError:
            with pytest.raises(TurnProtocolError):
                call(self.machine)
            assert numbers(self.machine) == before
            return
        decision = call(self.machine)
        assert decision.input is inp
        assert decision.actions == expected.actions, (inp, turn, before)
        assert decision.target == expected.target
        assert decision.committed == expected.committed
        assert decision.speculative is expected.speculative
        if expected.reason is not None:
            assert decision.reason == expected.reason
        assert decision.accepted is bool(expected.actions)
        assert numbers(self.machine) == self.model.numbers(), (inp, turn, before)

    @rule()
    def commit(self) -> None:
        self._check(lambda m: m.commit(), Input.COMMIT)

    @rule()
    def speculate(self) -> None:
        self._check(lambda m: m.speculate(), Input.SPECULATE)

    @rule(base=_BASES, delta=_DELTAS)
    def confirm(self, base: str, delta: int) -> None:
        turn = self._turn(base, delta)
        self._check(lambda m: m.confirm(turn), Input.CONFIRM, turn)

    @rule()
    def interrupt(self) -> None:
        self._check(lambda m: m.interrupt(), Input.INTERRUPT)

    @rule(base=_BASES, delta=_DELTAS)
    def cancel(self, base: str, delta: int) -> None:
        turn = self._turn(base, delta)
        self._check(lambda m: m.cancel(turn), Input.CANCEL, turn)

    @rule(base=_BASES, delta=_DELTAS)
    def clear(self, base: str, delta: int) -> None:
        turn = self._turn(base, delta)
        self._check(lambda m: m.clear(turn), Input.CLEAR, turn)

    @rule(base=_BASES, delta=_DELTAS, reason=_REASON)
    def fail(self, base: str, delta: int, reason: str) -> None:
        turn = self._turn(base, delta)
        self._check(lambda m: m.fail(turn, reason=reason), Input.FAIL, turn, reason)

    @rule(base=_BASES, delta=_DELTAS)
    def fail_with_the_default_reason(self, base: str, delta: int) -> None:
        turn = self._turn(base, delta)
        self._check(lambda m: m.fail(turn), Input.FAIL, turn)

    @rule(base=_BASES, delta=_DELTAS)
    def played(self, base: str, delta: int) -> None:
        turn = self._turn(base, delta)
        self._check(lambda m: m.played(turn), Input.PLAYED, turn)

    @rule(roll=st.integers(min_value=0, max_value=5))
    def close(self, roll: int) -> None:
        if roll == 0:  # rarely: it ends the session
            self._check(lambda m: m.close(), Input.CLOSE)

    @rule()
    def load_a_new_session(self) -> None:
        """A closed machine takes a snapshot in place and goes on from it."""
        if self.model.state is not C:
            return
        epoch = self.machine.epoch + 1
        self.machine.load(TurnSnapshot("listening", epoch=epoch, active=0, fence=epoch - 1))
        self.model = Model(L, epoch, 0, epoch - 1)

    @rule()
    def move_the_session(self) -> None:
        """Restore a copy from the snapshot (via msgpack) and carry on with the copy."""
        wire = msgspec.msgpack.encode(self.machine.snapshot())
        copy = TurnMachine.restore(msgspec.msgpack.decode(wire, type=TurnSnapshot))
        assert numbers(copy) == numbers(self.machine)
        self.machine = copy

    @invariant()
    def the_invariant_holds(self) -> None:
        assert_invariant(self.machine)
        assert numbers(self.machine) == self.model.numbers()


TestTurnsAgainstTheDocstring = TurnsAgainstTheDocstring.TestCase
TestTurnsAgainstTheDocstring.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)


def test_the_model_is_not_the_machine_under_another_name() -> None:
    """The model disagrees with a machine that does something else (the checks can fail)."""
    model, machine = Model(), TurnMachine()
    model.step(Input.COMMIT)
    machine.commit()
    expected = model.step(Input.PLAYED, 1)
    assert expected == Expected((F, CA), 1, reason="played")
    assert machine.played(1).actions == expected.actions
    broken = Model()
    broken.step(Input.COMMIT)
    assert broken.step(Input.PLAYED, 2) == _IGNORED  # naming another reply: stale
    assert broken.step(Input.CANCEL, 0) == _IGNORED
    with pytest.raises(TurnProtocolError):
        broken.step(Input.SPECULATE)
