"""The embedded store: :class:`SessionStore` in this process's memory.

Same rules as the Redis store (the lease rules are :class:`LeaseState`'s, the
streams keep the same order and trimming), so a whole cluster -- gateway,
dispatchers, workers -- runs in one process with zero setup, and the tests of
the roles run without a server. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from rspp.cluster.lease import LeaseState
from rspp.cluster.records import Lease, SessionRecord, WorkerInfo
from rspp.cluster.store import READ_PAGE, Fenced, InputEntry, Taken

__all__ = ["MemoryStore"]

#: Output entries kept per session (the Redis store trims to about as many).
OUTPUT_KEPT = 4096


@dataclass
class _Stream:
    """An append-only log with integer ids and waiters."""

    entries: list[tuple[int, object]] = field(default_factory=list)
    last: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, value: object) -> int:
        self.last += 1
        self.entries.append((self.last, value))
        self.changed.set()
        self.changed = asyncio.Event()
        return self.last

    def after(self, after: int) -> list[tuple[int, object]]:
        entries = self.entries
        if not entries or entries[-1][0] <= after:
            return []
        lo = 0
        hi = len(entries)
        while lo < hi:  # the first id above ``after``
            mid = (lo + hi) // 2
            if entries[mid][0] <= after:
                lo = mid + 1
            else:
                hi = mid
        return entries[lo:]

    async def read(self, after: int, block_ms: int) -> list[tuple[int, object]]:
        found = self.after(after)
        if found or block_ms <= 0:
            return found
        changed = self.changed
        try:
            # Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that comes
            # as the event is set (a crashed worker's reader then read on for a minute).
            async with asyncio.timeout(block_ms / 1000):
                await changed.wait()
        except TimeoutError:
            return []
        return self.after(after)

    def trim_through(self, upto: int) -> None:
        self.entries = [e for e in self.entries if e[0] > upto]

    def keep_last(self, n: int) -> None:
        if len(self.entries) > n:
            del self.entries[: len(self.entries) - n]


@dataclass
class _Session:
    record: SessionRecord
    lease: LeaseState = field(default_factory=LeaseState)
    checkpoint: bytes | None = None
    input: _Stream = field(default_factory=_Stream)
    output: _Stream = field(default_factory=_Stream)


class MemoryStore:
    """:class:`~rspp.cluster.store.SessionStore` in memory (see the module docstring)."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._workers: dict[str, WorkerInfo] = {}
        #: Worker id -> how many holders of its presence are running.
        self._present: dict[str, int] = {}
        self._inboxes: dict[str, _Stream] = {}
        self._dispatch = _Stream()
        #: Requests taken by a dispatcher and not yet acknowledged: id -> (who, when).
        self._pending: dict[int, tuple[str, int]] = {}
        self._delivered = 0
        self._t0 = time.monotonic()

    async def now_ms(self) -> int:
        return self._now()

    def _now(self) -> int:
        return int((time.monotonic() - self._t0) * 1000) + 1_000_000

    def _session(self, sid: str) -> _Session:
        found = self._sessions.get(sid)
        if found is None:
            found = self._sessions[sid] = _Session(SessionRecord(id=sid, pipeline=""))
        return found

    # -- sessions ---------------------------------------------------------------------------

    async def create(self, record: SessionRecord, ttl_s: int) -> None:
        self._session(record.id).record = msgspec.structs.replace(
            record, created_ms=record.created_ms or self._now()
        )

    async def record(self, sid: str) -> SessionRecord | None:
        found = self._sessions.get(sid)
        return None if found is None or not found.record.pipeline else found.record

    async def update(self, sid: str, **fields: str) -> None:
        s = self._session(sid)
        s.record = msgspec.structs.replace(s.record, **fields)

    # -- leases -----------------------------------------------------------------------------

    async def acquire(self, sid: str, worker: str, ttl_ms: int) -> Lease | None:
        lease = self._session(sid).lease
        if not lease.acquire(worker, ttl_ms, self._now()):
            return None
        return Lease(sid, worker, lease.token)

    async def take(self, sid: str, worker: str, ttl_ms: int, tail: int) -> Taken | None:
        lease = await self.acquire(sid, worker, ttl_ms)
        if lease is None:
            return None
        entries = self._session(sid).output.entries[-tail:] if tail > 0 else []
        newest: list[bytes] = [value for _, value in entries]  # type: ignore[misc]
        return Taken(lease, await self.record(sid), await self.load(sid), newest)

    async def renew(self, leases: Sequence[Lease], ttl_ms: int) -> list[bool]:
        now = self._now()
        return [
            self._session(one.session).lease.renew(one.worker, one.token, ttl_ms, now)
            for one in leases
        ]

    async def release(self, lease: Lease, to: str = "", hold_ms: int = 2000) -> bool:
        state = self._session(lease.session).lease
        return state.release(lease.worker, lease.token, to, hold_ms, self._now())

    async def finish(self, lease: Lease) -> bool:
        s = self._session(lease.session)
        if not s.lease.finish(lease.token):
            return False
        s.input = _Stream()
        s.checkpoint = None
        return True

    async def lease_of(self, sid: str) -> tuple[str, int, int]:
        lease = self._session(sid).lease
        return lease.owner, lease.token, lease.expires_ms

    async def orphans(self, limit: int = 100) -> list[str]:
        now = self._now()
        found = [
            sid
            for sid, s in self._sessions.items()
            if s.lease.token and not s.lease.ended and not s.lease.held(now)
        ]
        return found[:limit]

    async def claim(self, sid: str, hold_ms: int, dead: tuple[str, int] | None = None) -> bool:
        return self._session(sid).lease.claim(hold_ms, self._now(), dead)

    async def hold_presence(self, worker: str) -> None:
        self._present[worker] = self._present.get(worker, 0) + 1
        try:
            await asyncio.Event().wait()  # (until cancelled: a stopped worker is absent)
        finally:
            self._present[worker] -= 1

    async def present(self, workers: Sequence[str]) -> list[bool]:
        return [self._present.get(w, 0) > 0 for w in workers]

    async def owned_by(self, worker: str) -> list[tuple[str, int]]:
        return [
            (sid, s.lease.token)
            for sid, s in self._sessions.items()
            if s.lease.owner == worker and not s.lease.ended
        ]

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
        if output:
            await self.append_output(lease, output)
        s = self._session(lease.session)
        if not s.lease.allows(lease.token) or s.lease.ended:
            raise Fenced(f"session {lease.session}: token {lease.token} is not the owner's")
        s.checkpoint = checkpoint
        s.input.trim_through(input_seq)
        if handoff is not None and not await self.release(lease, handoff, hold_ms):
            raise Fenced(f"session {lease.session}: token {lease.token} is not the owner's")

    async def load(self, sid: str) -> bytes | None:
        found = self._sessions.get(sid)
        return None if found is None else found.checkpoint

    # -- the input log ----------------------------------------------------------------------

    async def append_input(self, sid: str, events: Sequence[bytes], close: str = "") -> int:
        log = self._session(sid).input
        last = log.last
        for event in events:
            last = log.append((event, None))
        if close:
            last = log.append((None, close))
        return last

    async def read_input(self, sid: str, after: int, block_ms: int) -> list[InputEntry]:
        found = await self._session(sid).input.read(after, block_ms)
        return [(n, *value) for n, value in found[:READ_PAGE]]  # type: ignore[misc]

    # -- the output path --------------------------------------------------------------------

    async def append_output(self, lease: Lease, entries: Sequence[bytes]) -> None:
        s = self._session(lease.session)
        if not s.lease.allows(lease.token):
            raise Fenced(f"session {lease.session}: token {lease.token} is not the owner's")
        out = s.output
        for entry in entries:
            out.append(entry)
        out.keep_last(OUTPUT_KEPT)

    async def read_output(self, sid: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        out = self._session(sid).output
        start = out.last if after == "$" else int(after)
        found = await out.read(start, block_ms)
        return [(str(n), value) for n, value in found[:READ_PAGE]]  # type: ignore[misc]

    # -- workers and dispatch ---------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo) -> None:
        self._workers[info.id] = msgspec.structs.replace(info, seen_ms=self._now())

    async def workers(self, max_age_ms: int) -> list[WorkerInfo]:
        now = self._now()
        for wid in [w for w, info in self._workers.items() if now - info.seen_ms > max_age_ms]:
            del self._workers[wid]
        return list(self._workers.values())

    async def tell(self, worker: str, task: bytes) -> None:
        self._inboxes.setdefault(worker, _Stream()).append(task)

    async def tasks(self, worker: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        inbox = self._inboxes.setdefault(worker, _Stream())
        start = inbox.last if after == "$" else int(after)
        found = await inbox.read(start, block_ms)
        return [(str(n), value) for n, value in found]  # type: ignore[misc]

    async def request(self, request: bytes) -> None:
        self._dispatch.append(request)

    async def requests(
        self, dispatcher: str, block_ms: int, reclaim_after_ms: int
    ) -> list[tuple[str, bytes]]:
        now = self._now()
        stale = {n for n, (_, when) in self._pending.items() if now - when > reclaim_after_ms}
        found = [(n, v) for n, v in self._dispatch.entries if n in stale]
        if not found:
            fresh = await self._dispatch.read(self._delivered, block_ms)
            if fresh:
                self._delivered = fresh[-1][0]
            found = fresh
        now = self._now()
        for n, _ in found:
            self._pending[n] = (dispatcher, now)
        return [(str(n), value) for n, value in found]  # type: ignore[misc]

    async def done(self, ids: Sequence[str]) -> None:
        for one in ids:
            self._pending.pop(int(one), None)
        kept = set(self._pending)
        self._dispatch.entries = [
            e for e in self._dispatch.entries if e[0] in kept or e[0] > self._delivered
        ]

    async def close(self) -> None:
        return None
