"""The one interface to where a cluster keeps its state: :class:`SessionStore`.

Two implementations with the same rules: :class:`~rspp.cluster.memory_store.MemoryStore`
(in this process: one-process setups and fast tests) and
:class:`~rspp.cluster.redis_store.RedisStore` (``redis-py`` asyncio, the key
layout of :mod:`rspp.cluster.keys`). What a session needs to resume lives
here: its record (pipeline), its lease, its last :class:`~.records.Checkpoint`
(snapshot with conversation, turn counter, node state, playback and input
positions) and its input log; and the path its output takes to the gateway.

Every write a session's owner makes is *fenced*: it names the owner's
:class:`~.records.Lease` and is refused with :class:`Fenced` when a later
owner exists. A store that cannot be reached raises :class:`StoreUnavailable`
(callers retry; a call in progress goes on meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from rspp.cluster.records import Lease, SessionRecord, WorkerInfo
from rspp.kernel import RsppError

__all__ = ["Fenced", "SessionStore", "StoreError", "StoreUnavailable", "Taken", "warm"]

log = logging.getLogger("rspp.cluster")

#: The most entries one read of the input log or the output returns.
READ_PAGE = 1000

#: An input log entry: an event (MessagePack ABI bytes) or a close (its reason).
InputEntry = tuple[int, bytes | None, str | None]


class StoreError(RsppError):
    """The store refused or failed an operation."""


class Fenced(StoreError):
    """A write named a lease that is no longer the session's current one."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (or timed out); the operation may be retried."""


class Taken(NamedTuple):
    """What :meth:`SessionStore.take` read once the lease was granted."""

    lease: Lease
    record: SessionRecord | None
    checkpoint: bytes | None
    #: The newest output entries, oldest first.
    tail: list[bytes]


class SessionStore(Protocol):
    """Everything the gateway, dispatchers and workers share (see the module docstring)."""

    # -- the store's clock ------------------------------------------------------------------

    async def now_ms(self) -> int:
        """The store's clock: leases and heartbeats are judged by it alone."""
        ...

    # -- sessions ---------------------------------------------------------------------------

    async def create(self, record: SessionRecord, ttl_s: int) -> None:
        """Write a new session's record (its keys expire ``ttl_s`` after their last write)."""
        ...

    async def record(self, sid: str) -> SessionRecord | None: ...

    async def update(self, sid: str, **fields: str) -> None:
        """Set fields of the record (``state``, ``reason``, ``worker``, ``pipeline``)."""
        ...

    # -- leases -----------------------------------------------------------------------------

    async def acquire(self, sid: str, worker: str, ttl_ms: int) -> Lease | None:
        """Own ``sid`` (token raised) or None if someone else holds it or it ended."""
        ...

    async def take(self, sid: str, worker: str, ttl_ms: int, tail: int) -> Taken | None:
        """:meth:`acquire`, and once granted, in the same step, what a new owner reads:
        the record, the last checkpoint and the newest ``tail`` output entries (one round
        trip on a worker that may be taking a dead one's sessions all at once)."""
        ...

    async def renew(self, leases: Sequence[Lease], ttl_ms: int) -> list[bool]:
        """Extend each lease; False for one that is no longer the current one."""
        ...

    async def release(self, lease: Lease, to: str = "", hold_ms: int = 2000) -> bool:
        """Give ``lease`` up (to worker ``to``, who then has ``hold_ms`` to take it)."""
        ...

    async def finish(self, lease: Lease) -> bool:
        """The session ended: nobody acquires it again; its logs are dropped."""
        ...

    async def lease_of(self, sid: str) -> tuple[str, int, int]:
        """``(owner, token, expires_ms)`` of the lease (owner "" when free)."""
        ...

    async def orphans(self, limit: int = 100) -> list[str]:
        """Sessions whose lease ran out (from the index; a candidate list, not a verdict)."""
        ...

    async def claim(self, sid: str, hold_ms: int, dead: tuple[str, int] | None = None) -> bool:
        """A dispatcher's exclusive right, for ``hold_ms``, to place an orphaned session.

        ``dead``: ``(owner, token)`` of a lease whose owner's process is gone
        (:meth:`present` says so): the lease lapses now if it is still that one's.
        """
        ...

    # -- presence (a dead process is seen at once, not at its leases' TTL) -------------------

    async def hold_presence(self, worker: str) -> None:
        """Be present as ``worker`` until cancelled (bound to a connection: a process that
        dies is absent at once)."""
        ...

    async def present(self, workers: Sequence[str]) -> list[bool]:
        """Whether each of ``workers`` holds its presence now."""
        ...

    async def owned_by(self, worker: str) -> list[tuple[str, int]]:
        """``(session, token)`` of the leases ``worker`` held at its last renewal."""
        ...

    # -- state ------------------------------------------------------------------------------

    async def save(
        self,
        lease: Lease,
        checkpoint: bytes,
        input_seq: int,
        *,
        output: Sequence[bytes] = (),
        handoff: str | None = None,
        hold_ms: int = 2000,
    ) -> None:
        """Write the session's checkpoint (fenced) and trim its input log to after ``input_seq``.

        In the same round trip and in this order: ``output`` entries first (the output
        the checkpoint follows), then the checkpoint, then, with ``handoff`` (a worker,
        or "" for whoever a dispatcher picks), the lease released as :meth:`release`
        does. Raises :class:`Fenced` if any of it is refused.
        """
        ...

    async def load(self, sid: str) -> bytes | None:
        """The session's last checkpoint, if any."""
        ...

    # -- the input log (gateway -> worker) --------------------------------------------------

    async def append_input(self, sid: str, events: Sequence[bytes], close: str = "") -> int:
        """Append events (and a close, if ``close``) to the log; the last entry's number."""
        ...

    async def read_input(self, sid: str, after: int, block_ms: int) -> list[InputEntry]:
        """Entries numbered above ``after`` (waiting up to ``block_ms`` for the first; at
        most :data:`READ_PAGE`)."""
        ...

    # -- the output path (worker -> gateway) ------------------------------------------------

    async def append_output(self, lease: Lease, entries: Sequence[bytes]) -> None:
        """Append output entries (fenced; raises :class:`Fenced` for a stale owner)."""
        ...

    async def read_output(self, sid: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        """Output entries after id ``after`` ("0": from the oldest kept; "$": new ones; at
        most :data:`READ_PAGE`)."""
        ...

    # -- workers and dispatch ----------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo) -> None: ...

    async def workers(self, max_age_ms: int) -> list[WorkerInfo]:
        """Workers heard from in the last ``max_age_ms`` (the others are removed)."""
        ...

    async def tell(self, worker: str, task: bytes) -> None:
        """Put a task in a worker's inbox."""
        ...

    async def tasks(self, worker: str, after: str, block_ms: int) -> list[tuple[str, bytes]]: ...

    async def request(self, request: bytes) -> None:
        """Ask the dispatchers (one of them takes it)."""
        ...

    async def requests(
        self, dispatcher: str, block_ms: int, reclaim_after_ms: int
    ) -> list[tuple[str, bytes]]:
        """This dispatcher's next requests, and those another took but never acknowledged."""
        ...

    async def done(self, ids: Sequence[str]) -> None:
        """Acknowledge requests."""
        ...

    async def close(self) -> None: ...


async def warm(store: SessionStore, connections: int) -> None:
    """Open ``connections`` to the store now, where it keeps a pool (Redis): a burst later
    -- a dead worker's sessions taken or claimed all at once -- then connects none of them
    on its critical path. Best effort: a store that is away now is not an error here."""
    warming = getattr(store, "warm", None)
    if warming is None:
        return
    try:
        await warming(connections)
    except StoreError as exc:
        log.warning("could not open connections to the store ahead: %s", exc)
