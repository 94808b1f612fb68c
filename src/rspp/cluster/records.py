"""What the cluster's roles write to the store and say to each other (MessagePack)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Checkpoint",
    "Lease",
    "OutputEntry",
    "Request",
    "SessionRecord",
    "Task",
    "WorkerInfo",
]


class SessionRecord(msgspec.Struct, kw_only=True):
    """A session as the cluster knows it (``rspp:{S}:session``).

    ``state``: ``pending`` (asked for, not placed yet), ``running`` (a worker took
    it), ``refused`` (no worker could take it: ``reason`` says why), ``ended``.
    """

    id: str
    pipeline: str
    state: str = "pending"
    reason: str = ""
    worker: str = ""
    created_ms: int = 0


class WorkerInfo(msgspec.Struct, kw_only=True):
    """A worker's heartbeat: what a dispatcher places sessions by."""

    id: str
    pipelines: list[str]
    capacity: int
    active: int = 0
    #: CPU use of the worker process over the last interval (1.0: one core busy).
    cpu: float = 0.0
    draining: bool = False
    #: The snapshot format and ABI major it reads (a rolling upgrade's guard).
    abi: str = ""
    version: str = ""
    #: The store's clock (ms) when it was written; set by the store.
    seen_ms: int = 0

    @property
    def room(self) -> int:
        return 0 if self.draining else max(0, self.capacity - self.active)


class Lease(msgspec.Struct, frozen=True):
    """A worker's hold on a session: every fenced write names it."""

    session: str
    worker: str
    token: int


class Checkpoint(msgspec.Struct, kw_only=True):
    """A session's resumable state (``rspp:{S}:snap``): a snapshot and where the log stood.

    ``input_seq`` is the last input the snapshot has taken in: a new owner
    replays the log above it. ``stamps`` is the output numbering of the writer
    (:class:`~rspp.cluster.stamps.OutputStamps`), so that what a new owner
    repeats is recognised downstream.
    """

    token: int
    pipeline: str
    input_seq: int
    snapshot: bytes
    stamps: dict[str, int] = msgspec.field(default_factory=dict)
    taken_ms: int = 0
    #: A hot swap: restore into ``pipeline`` (another one) at this turn boundary.
    swap: bool = False
    #: The pipeline's spec (MessagePack), when it is not one the workers offer by name
    #: (a session's own upgrade: another LLM config), so that any worker can build it.
    spec: bytes | None = None


class OutputEntry(msgspec.Struct, array_like=True):
    """One output event on ``rspp:{S}:out``: its writer's token and its stamp."""

    token: int
    turn: int
    index: int
    event: bytes


class Task(msgspec.Struct, kw_only=True):
    """What a worker is told through its inbox (``rspp:w:{W}:inbox``).

    ``take``: own ``session`` (new, or a takeover); ``move``: hand ``session`` over
    (to ``to``, or anywhere); ``swap``: switch ``session`` at its next turn boundary to
    ``pipeline`` (or its own, with ``config``: node name -> settings to change);
    ``drain``: hand every session over and exit.
    """

    do: str
    session: str = ""
    to: str = ""
    why: str = ""
    pipeline: str = ""
    config: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class Request(msgspec.Struct, kw_only=True):
    """What dispatchers are asked (``rspp:dispatch``): place a session on a worker.

    ``why``: ``open`` (a new call), ``failover`` (its owner died), ``move``
    (handed over: to ``to`` if given), with the workers it must not go to.
    """

    session: str
    pipeline: str
    why: str = "open"
    to: str = ""
    exclude: list[str] = msgspec.field(default_factory=list)
    #: The checkpoints it has need a worker that reads at least this
    #: (:func:`~rspp.cluster.worker.compatibility`; "" for a new session).
    needs: str = ""
