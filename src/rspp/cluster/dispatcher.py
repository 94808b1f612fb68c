"""``rspp dispatcher``: places sessions on workers, and replaces the ones that die.

Any number of dispatchers run at once, with no leader: they share the store's
request stream through a consumer group (each request goes to one of them,
and one a dispatcher took but never acknowledged -- it died -- is taken by
another after ``reclaim_after_ms``), and an orphaned session is placed only by
the dispatcher whose *claim* (a Lua script on the session's lease) succeeded.
Even two placements of one session would be harmless: only one worker can
acquire its lease.

It does three things:

* **requests** -- a new call (``open``), a session handed over (``move``, from
  a draining worker or ``rspp sessions move``): choose a worker
  (:class:`~rspp.cluster.placement.Placement`) and tell it to take the
  session. A new call that no worker can take is *refused* (its record says
  why: the gateway tells the caller); a move or failover with no room is
  retried until there is.
* **failover** -- every ``scan_every_ms``, sessions whose lease lapsed (the
  store's index) are claimed and placed elsewhere. So are, at once, the
  sessions of a worker whose *presence* ended (:meth:`SessionStore.present`:
  bound to a connection of the worker's process, it ends when the process
  dies) for ``absent_for_ms``: a SIGKILL, a crash or the OOM killer costs the
  caller the take, not the lease TTL too. A hung or cut-off worker keeps its
  connection, or its presence cannot be asked: for those the TTL decides, as
  before. Neither while the store has been back for less than a lease TTL and
  a renewal: after an outage the live owners get to renew (and be present)
  first.
* **admin** -- :func:`request_move` (``rspp sessions move``, the dispatcher's
  admin endpoint) asks a session's owner to hand it over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from rspp.cluster.compat import reads
from rspp.cluster.metrics import DispatcherMetrics
from rspp.cluster.placement import Placement
from rspp.cluster.records import Request, Task, WorkerInfo
from rspp.cluster.store import SessionStore, StoreError, StoreUnavailable, warm

__all__ = ["Dispatcher", "DispatcherConfig", "MoveRefused", "request_move", "request_swap"]

log = logging.getLogger("rspp.cluster.dispatcher")


def default_dispatcher_id() -> str:
    return f"dispatcher-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass
class DispatcherConfig:
    id: str = field(default_factory=default_dispatcher_id)
    scan_every_ms: int = 50
    #: A worker not heard from for this long is gone.
    worker_max_age_ms: int = 1000
    #: The workers' lease TTL and renewal period (for the grace after an outage).
    lease_ttl_ms: int = 600
    renew_every_ms: int = 150
    claim_hold_ms: int = 3000
    reclaim_after_ms: int = 2000
    retry_after_s: float = 0.2
    #: A worker seen present whose presence has ended, and still has this long after, is
    #: dead (a connection being made again is back well within it).
    absent_for_ms: int = 30


class MoveRefused(StoreError):
    """A move that cannot be made (the session is not running, no such worker...)."""


class Dispatcher:
    """One dispatcher (see the module docstring)."""

    def __init__(
        self,
        store: SessionStore,
        config: DispatcherConfig | None = None,
        *,
        metrics: DispatcherMetrics | None = None,
    ) -> None:
        self.store = store
        self.config = config or DispatcherConfig()
        self.metrics = metrics or DispatcherMetrics()
        self.placement = Placement()
        self._workers: list[WorkerInfo] = []
        self._workers_at = 0.0
        self._healthy_since = time.monotonic()
        self.store_ok = True
        #: Moves and failovers that found no room: (when to try again, request).
        self._retry: list[tuple[float, Request]] = []
        #: Presence: the workers seen present (and not gone since), and the gone ones.
        self._seen: set[str] = set()
        self._dead: set[str] = set()
        #: False once the store said it cannot tell presence (then the TTL alone decides).
        self._presence = True

    @property
    def id(self) -> str:
        return self.config.id

    async def run(self) -> None:
        await warm(self.store, 32)  # (a dead worker's sessions are claimed all at once)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._serve())
            tg.create_task(self._scan())

    def _trouble(self, exc: StoreError) -> None:
        if self.store_ok:
            log.warning(
                "dispatcher %s: store unavailable (%s): no failover meanwhile", self.id, exc
            )
        self.store_ok = False

    def _fine(self) -> None:
        if not self.store_ok:
            log.info("dispatcher %s: store back", self.id)
            self._healthy_since = time.monotonic()
        self.store_ok = True

    async def workers(self, fresh: bool = False) -> list[WorkerInfo]:
        """The live workers (cached for a tenth of a second)."""
        now = time.monotonic()
        if fresh or now - self._workers_at > 0.1:
            async with self.metrics.store.time("workers"):
                found = await self.store.workers(self.config.worker_max_age_ms)
            self._dead &= {w.id for w in found}  # (one no longer beating is forgotten)
            self._workers = [w for w in found if w.id not in self._dead]
            self._workers_at = now
            self.metrics.workers.set(len(self._workers))
            self.metrics.room.set(sum(w.room for w in self._workers))
        return self._workers

    async def _serve(self) -> None:
        cfg = self.config
        while True:
            try:
                block = 100 if self._retry else 500
                found = await self.store.requests(self.id, block, cfg.reclaim_after_ms)
                self._fine()
                done: list[str] = []
                for entry_id, raw in found:
                    try:
                        request = msgspec.msgpack.decode(raw, type=Request)
                    except msgspec.DecodeError:
                        log.warning("dispatcher %s: undecodable request dropped", self.id)
                    else:
                        await self.place(request)
                    done.append(entry_id)
                await self.store.done(done)
                now = time.monotonic()
                due = [request for when, request in self._retry if when <= now]
                self._retry = [(when, r) for when, r in self._retry if when > now]
                for request in due:
                    await self.place(request)
            except StoreUnavailable as exc:
                self._trouble(exc)
                await asyncio.sleep(0.1)

    async def place(self, request: Request) -> str:
        """Tell a worker to take ``request``'s session; its id, or "" (refused / retry)."""
        workers = await self.workers()
        target = self.placement.choose(request, workers)
        if target is None and workers:
            target = self.placement.choose(request, await self.workers(fresh=True))
        if target is None:
            if request.why == "open":
                self.metrics.decisions.labels(request.why, "refused").inc()
                reason = (
                    "no worker runs this pipeline"
                    if not any(request.pipeline in w.pipelines for w in workers)
                    else "the cluster is full"
                )
                await self.store.update(request.session, state="refused", reason=reason)
                log.info("dispatcher %s: refused %s: %s", self.id, request.session, reason)
            else:
                self.metrics.decisions.labels(request.why, "retry").inc()
                self._retry.append((time.monotonic() + self.config.retry_after_s, request))
            return ""
        task = Task(do="take", session=request.session, why=request.why)
        await self.store.tell(target.id, msgspec.msgpack.encode(task))
        self.metrics.decisions.labels(request.why, "placed").inc()
        log.info("dispatcher %s: %s %s -> %s", self.id, request.why, request.session, target.id)
        return target.id

    async def _scan(self) -> None:
        cfg = self.config
        grace = (cfg.lease_ttl_ms + 2 * cfg.renew_every_ms) / 1000
        while True:
            await asyncio.sleep(cfg.scan_every_ms / 1000)
            try:
                found, absent = await asyncio.gather(self.store.orphans(), self._absentees())
                self._fine()  # the store answered: the grace is judged from here
                if time.monotonic() - self._healthy_since < grace:
                    continue  # (just back from an outage: owners renew, and subscribe, first)
                dead = await self._gone(absent)
                # All at once: a dead worker's sessions wait for the slowest, not the sum.
                async with asyncio.TaskGroup() as tg:
                    for sid in found:
                        tg.create_task(self._failover(sid))
                    for sid, lease in dead.items():
                        if sid not in found:
                            tg.create_task(self._failover(sid, lease))
            except* StoreUnavailable as group:
                self._trouble(StoreUnavailable(str(group.exceptions[0])))

    async def _absentees(self) -> list[str]:
        """Workers this dispatcher has seen present and that are not now."""
        ids = sorted({w.id for w in await self.workers()} | self._seen)
        if not ids or not self._presence:
            return []
        try:
            here = await self.store.present(ids)
        except StoreUnavailable:
            raise
        except StoreError as exc:  # (a server without sharded pub/sub: Redis < 7)
            log.warning(
                "dispatcher %s: the store cannot tell presence (%s): failover by lease TTL only",
                self.id,
                exc,
            )
            self._presence = False
            return []
        absent: list[str] = []
        for wid, present in zip(ids, here, strict=True):
            if present:
                self._seen.add(wid)
                self._dead.discard(wid)  # (back: it was not dead, or it is another one now)
            elif wid in self._seen and wid not in self._dead:
                absent.append(wid)  # (one never seen present may not have subscribed yet)
        return absent

    async def _gone(self, absent: list[str]) -> dict[str, tuple[str, int]]:
        """The sessions (and their dead leases) of the ``absent`` workers that are gone:
        still absent ``absent_for_ms`` later (not a connection being made again)."""
        if not absent:
            return {}
        await asyncio.sleep(self.config.absent_for_ms / 1000)
        again = await self.store.present(absent)
        gone = [wid for wid, present in zip(absent, again, strict=True) if not present]
        owned = await asyncio.gather(*(self.store.owned_by(wid) for wid in gone))
        sessions: dict[str, tuple[str, int]] = {}
        for wid, theirs in zip(gone, owned, strict=True):
            self._dead.add(wid)
            self._seen.discard(wid)  # (seen present again, it is alive again)
            self._workers = [w for w in self._workers if w.id != wid]
            self.metrics.workers_gone.inc()
            log.warning(
                "dispatcher %s: worker %s is gone (its presence ended): failing over what"
                " it still owned of its %d sessions at its last renewal",
                self.id,
                wid,
                len(theirs),
            )
            sessions.update((sid, (wid, token)) for sid, token in theirs)
        return sessions

    async def _failover(self, sid: str, dead: tuple[str, int] | None = None) -> None:
        """Place ``sid`` elsewhere if this dispatcher's claim on it succeeds (``dead``: the
        lease of an owner whose process is gone, which lapses now)."""
        # The record and the lapsed owner are read beside the claim (one round trip, not
        # three); a claim lost to another dispatcher costs two small reads.
        claimed, record, (owner, _, _) = await asyncio.gather(
            self.store.claim(sid, self.config.claim_hold_ms, dead),
            self.store.record(sid),
            self.store.lease_of(sid),
        )
        if not claimed or record is None or record.state in ("ended", "refused"):
            return
        self.metrics.orphans.inc()
        log.info("dispatcher %s: %s lost its owner %s", self.id, sid, owner or "?")
        await self.place(
            Request(
                session=sid,
                pipeline=record.pipeline,
                why="failover",
                exclude=[owner] if owner else [],
            )
        )


async def request_move(store: SessionStore, sid: str, to: str = "") -> str:
    """Ask ``sid``'s owner to hand it over (to worker ``to``, or where a dispatcher says).

    Returns the owner asked; raises :class:`MoveRefused` with the reason otherwise.
    """
    owner, token, _ = await store.lease_of(sid)
    if not owner or not token:
        raise MoveRefused(f"session {sid} has no owner now (not running, or moving)")
    if to:
        if to == owner:
            raise MoveRefused(f"session {sid} is already on {to}")
        workers = {w.id: w for w in await store.workers(2000)}
        target = workers.get(to)
        if target is None:
            raise MoveRefused(f"no live worker {to!r}")
        source = workers.get(owner)
        if target.draining:
            raise MoveRefused(f"worker {to} is draining")
        if source is not None and not reads(target.abi, source.abi):
            raise MoveRefused(
                f"worker {to} does not read {owner}'s checkpoints ({source.abi}; it reads"
                f" {target.abi}): the session stays on {owner}"
            )
    await store.tell(owner, msgspec.msgpack.encode(Task(do="move", session=sid, to=to)))
    return owner


async def request_swap(
    store: SessionStore,
    sid: str,
    pipeline: str = "",
    config: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Ask ``sid``'s owner to switch it, at its next turn boundary, to ``pipeline`` (one the
    workers offer) or to its own pipeline with ``config`` changed (node -> settings: an
    LLM upgrade mid-session). Returns the owner asked; raises :class:`MoveRefused`."""
    if not pipeline and not config:
        raise MoveRefused("a swap needs a pipeline or a config to change")
    owner, token, _ = await store.lease_of(sid)
    if not owner or not token:
        raise MoveRefused(f"session {sid} has no owner now (not running, or moving)")
    if pipeline:
        workers = {w.id: w for w in await store.workers(2000)}
        found = workers.get(owner)
        if found is not None and pipeline not in found.pipelines:
            raise MoveRefused(f"worker {owner} does not run pipeline {pipeline!r}")
    task = Task(do="swap", session=sid, pipeline=pipeline, config=config or {})
    await store.tell(owner, msgspec.msgpack.encode(task))
    return owner
