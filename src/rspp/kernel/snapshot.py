"""Session snapshots: what a session needs to resume in another process, at any instant.

A session's state is *a snapshot plus the input after it*. :func:`capture`
takes one at any moment -- between turns, mid-reply, mid-barge-in, with
timers pending -- and :func:`restore` puts a fresh session (in this process or
another) into that state before its tasks start. What a restore does with
each piece:

===================  =====================================================
piece                on restore
===================  =====================================================
session time         continues from the snapshot's (plus the wall-clock time
                     the move took, unless ``resume_at_ns`` says otherwise):
                     origin times, deadlines and latency marks keep meaning
turn machine         as it was: LISTENING, SPECULATING or RESPONDING, same
                     numbers (its invariant is checked)
numbering            ``seq``, output position and input sequence continue;
                     the incarnation goes up by one (or is the one given)
conversation         the committed history, the text the reply in progress
                     has produced so far, a held speculation's user message
heard record         the reply in progress: audio sent, the text it voiced,
                     the client's latest playback report
latency marks        session-time marks of the turns in progress
node state           each node's typed State, validated (see below)
queued events        re-queued where they were, in order
in-flight events     handed to their node again, first: a ``resumable``
                     node's State says how far it got and it continues (the
                     reply goes on from where the user was; nothing is heard
                     twice); any other node was in the middle of
                     *input* (handled again) or of *reply* output, which it
                     would restart -- then the reply is ended where the user
                     stopped hearing it (``turn.interrupted``, ``moved``)
timers               not moved by the kernel: nodes keep their deadlines in
                     State and re-arm them (``ctx.call_at``) in restore()
paused output        stays paused (the turn manager decides, as before)
===================  =====================================================

Identity is checked before anything is touched, and every problem is
reported in one :class:`~rspp.kernel.errors.SnapshotError`: another snapshot
format, another ABI major, another pipeline or pipeline version, a node of the
snapshot that the pipeline lacks (renamed or removed) or of another type, a
node state that does not validate against the node's ``State``, an event that
does not decode, an inconsistent turn machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from rspp.events import ABI_VERSION, DecodeError, Event, MsgpackCodec
from rspp.kernel.conversation import ConversationSnapshot
from rspp.kernel.delivery import LedgerEntry
from rspp.kernel.errors import SnapshotError, TurnProtocolError
from rspp.kernel.latency import LatencySnapshot, SpeculationStats
from rspp.kernel.turns import TurnMachine, TurnSnapshot

if TYPE_CHECKING:
    from rspp.kernel.session import Session

__all__ = ["SNAPSHOT_FORMAT", "NodeSnapshot", "SessionSnapshot", "capture", "restore"]

#: Version of the snapshot layout; snapshots of another format are refused.
SNAPSHOT_FORMAT = 2


class NodeSnapshot(msgspec.Struct, kw_only=True):
    """One node's part: its type, and its State encoded as MessagePack (None: stateless)."""

    type: str
    state: bytes | None = None


class SessionSnapshot(msgspec.Struct, kw_only=True):
    """What a session needs to resume elsewhere (see the module docstring)."""

    format: int = SNAPSHOT_FORMAT
    abi: str
    pipeline: str
    pipeline_version: int
    session: str
    incarnation: int
    #: The last ``seq``, output position and input sequence number given.
    seq: int
    pos: int
    input_seq: int
    #: Session time and wall-clock time (``time.time_ns``) when it was taken.
    clock_ns: int
    wall_ns: int
    turns: TurnSnapshot
    nodes: dict[str, NodeSnapshot]
    #: Events queued at each node, not yet handled (MessagePack-encoded).
    pending: dict[str, list[bytes]] = msgspec.field(default_factory=dict)
    #: The event each queued node was in the middle of (MessagePack-encoded).
    in_flight: dict[str, bytes] = msgspec.field(default_factory=dict)
    conversation: ConversationSnapshot = msgspec.field(default_factory=ConversationSnapshot)
    #: The heard record of the reply in progress.
    heard: LedgerEntry | None = None
    latency: LatencySnapshot = msgspec.field(default_factory=LatencySnapshot)
    speculation: SpeculationStats = msgspec.field(default_factory=SpeculationStats)
    #: The reply output was paused (an undecided barge-in).
    paused: bool = False


def capture(session: Session) -> SessionSnapshot:
    """Take a snapshot of ``session`` now (see the module docstring)."""
    codec = MsgpackCodec()
    nodes: dict[str, NodeSnapshot] = {}
    pending: dict[str, list[bytes]] = {}
    in_flight: dict[str, bytes] = {}
    fence = session.turns.fence
    for name, runner in session.runners.items():
        node = runner.node
        plan = runner.plan
        assert node is not None and plan is not None
        state = node.snapshot()
        encoded: bytes | None = None
        if state is not None:
            if node.State is None or not isinstance(state, node.State):
                raise TypeError(
                    f"node {name!r} ({plan.type_name}): snapshot() returned a "
                    f"{type(state).__name__}; it must return an instance of the node's State type"
                )
            encoded = msgspec.msgpack.encode(state)
        nodes[name] = NodeSnapshot(type=plan.type_name, state=encoded)
        inbox = runner.inbox
        if inbox is not None and len(inbox):
            kept = [codec.encode(ev) for ev in inbox if not _over(ev, fence)]
            if kept:
                pending[name] = kept
        current = runner.in_flight
        if current is not None and not _over(current, fence):
            in_flight[name] = codec.encode(current)
    turns = session.turns
    return SessionSnapshot(
        abi=ABI_VERSION,
        pipeline=session.pipeline.name,
        pipeline_version=session.pipeline.spec.version,
        session=session.id,
        incarnation=session.incarnation,
        seq=session.emission.seq,
        pos=session.outbound.pos,
        input_seq=session.ingress.seq,
        clock_ns=session.clock.now_ns(),
        wall_ns=time.time_ns(),
        turns=turns.snapshot(),
        nodes=nodes,
        pending=pending,
        in_flight=in_flight,
        conversation=session.conversation.snapshot(turns.active),
        heard=session.ledger.snapshot(turns.active) if turns.active else None,
        latency=session.latency.snapshot(),
        speculation=_copy_stats(session.speculation),
        paused=session.watchdog.paused,
    )


def _over(event: Event, fence: int) -> bool:
    """Reply output of a reply that is over: nothing to move."""
    return event.__class__.fenced and event.turn <= fence


def _copy_stats(stats: SpeculationStats) -> SpeculationStats:
    return msgspec.structs.replace(stats, saved_ms=list(stats.saved_ms))


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :func:`restore` decoded and checked, before it touches the session."""

    states: dict[str, msgspec.Struct | None]
    pending: dict[str, list[Event]]
    in_flight: dict[str, Event]
    #: Events queued at nodes a swap removed (counted as dropped).
    swapped_out: dict[str, int]


def _check(session: Session, snap: SessionSnapshot, swap: bool) -> _Plan:
    problems: list[str] = []
    pipeline = session.pipeline
    if snap.format != SNAPSHOT_FORMAT:
        problems.append(f"snapshot format {snap.format}, this runtime reads {SNAPSHOT_FORMAT}")
    if snap.abi.split(".")[0] != ABI_VERSION.split(".")[0]:
        problems.append(f"snapshot of ABI {snap.abi}, this runtime speaks {ABI_VERSION}")
    if swap:
        if snap.turns.state != "listening" or snap.in_flight:
            problems.append(
                "a pipeline swap needs a turn boundary (no reply in progress), "
                f"the snapshot is {snap.turns.state}"
            )
    elif snap.pipeline != pipeline.name:
        problems.append(f"snapshot of pipeline {snap.pipeline!r}, not {pipeline.name!r}")
    elif snap.pipeline_version != pipeline.spec.version:
        problems.append(
            f"snapshot of {snap.pipeline!r} version {snap.pipeline_version}, "
            f"this pipeline is version {pipeline.spec.version}"
        )
    if snap.session != session.id:
        problems.append(f"snapshot of session {snap.session!r} restored as {session.id!r}")
    try:
        TurnMachine.restore(snap.turns)
    except TurnProtocolError as exc:
        problems.append(str(exc))
    runners = session.runners
    states: dict[str, msgspec.Struct | None] = {}
    for name, saved in snap.nodes.items():
        runner = runners.get(name)
        if runner is None:
            if not swap:
                problems.append(
                    f"node {name!r} ({saved.type}) of the snapshot is not in the pipeline"
                )
            continue
        assert runner.plan is not None and runner.node is not None
        if saved.type != runner.plan.type_name:
            if not swap:  # a swap replaces the node: it starts afresh
                problems.append(
                    f"node {name!r} is a {saved.type} in the snapshot,"
                    f" a {runner.plan.type_name} here"
                )
            continue
        state_type = runner.node.State
        if saved.state is None:
            states[name] = None
        elif state_type is None:
            if not swap:
                problems.append(
                    f"node {name!r} ({saved.type}) has state but declares no State type"
                )
        else:
            try:
                states[name] = msgspec.msgpack.decode(saved.state, type=state_type)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                if not swap:  # a swap's new config may keep other state: start afresh
                    problems.append(f"node {name!r} ({saved.type}): state does not validate: {exc}")
    if not swap:
        problems.extend(
            f"node {name!r} is not in the snapshot (renamed or added?)"
            for name in runners
            if name not in snap.nodes
        )
    codec = MsgpackCodec()
    pending: dict[str, list[Event]] = {}
    in_flight: dict[str, Event] = {}
    swapped_out: dict[str, int] = {}
    for where, items in (("queued", snap.pending), ("in flight", _single(snap.in_flight))):
        for name, raws in items.items():
            runner = runners.get(name)
            if runner is None or runner.inbox is None:
                if swap:
                    swapped_out[name] = len(raws)
                    continue
                problems.append(f"events {where} at {name!r}, which is not a queued node here")
                continue
            try:
                events = [codec.decode(raw) for raw in raws]
            except DecodeError as exc:
                problems.append(f"an event {where} at {name!r} does not decode: {exc}")
                continue
            if where == "queued":
                pending[name] = events
            else:
                in_flight[name] = events[0]
    if problems:
        raise SnapshotError(problems)
    return _Plan(states=states, pending=pending, in_flight=in_flight, swapped_out=swapped_out)


def _single(in_flight: dict[str, bytes]) -> dict[str, list[bytes]]:
    return {name: [raw] for name, raw in in_flight.items()}


def restore(
    session: Session,
    snap: SessionSnapshot,
    *,
    incarnation: int | None,
    resume_at_ns: int | None,
    swap: bool = False,
) -> bool:
    """Put ``session`` (nodes built, tasks not started) into the snapshot's state.

    Returns whether the reply in progress can continue (False: a node that cannot
    resume was in the middle of it; the caller ends it once the session runs).

    ``swap``: the session is of *another* pipeline (a hot swap: another voice, another
    ASR, an upgraded LLM). Only at a turn boundary; the conversation, turn numbers,
    numbering and session time carry over, and each node whose name, type and State
    still fit keeps its state -- every other node starts afresh.
    """
    plan = _check(session, snap, swap)
    for name, n in plan.swapped_out.items():
        session.count_drop(name, "?", "swapped_out", n)
    session.outbound.incarnation = incarnation if incarnation is not None else snap.incarnation + 1
    session.emission.seq = snap.seq
    session.outbound.pos = snap.pos
    session.ingress.seq = snap.input_seq
    if resume_at_ns is None:
        resume_at_ns = snap.clock_ns + max(0, time.time_ns() - snap.wall_ns)
    session.clock.continue_at(resume_at_ns)
    session.turns.load(snap.turns)
    session.conversation.restore(snap.conversation)
    session.ledger.restore(snap.heard)
    session.latency.restore(snap.latency)
    session.speculation = _copy_stats(snap.speculation)
    for name, state in plan.states.items():
        if state is not None:
            session.runners[name].node.restore(state)  # type: ignore[union-attr]
    active = session.turns.active
    continues = True
    for name, runner in session.runners.items():
        inbox = runner.inbox
        if inbox is None:
            continue
        again: list[Event] = []
        current = plan.in_flight.get(name)
        if current is not None:
            reply = current.__class__.fenced and current.turn == active
            assert runner.node is not None
            if reply and not runner.node.resumable:
                continues = False
            else:
                again.append(current)
        inbox.put_front([*again, *plan.pending.get(name, ())])
    if snap.paused:
        session.watchdog.pause()
    return continues
