"""``rspp worker``: runs sessions, many per process, each owned by a lease.

A worker loads its pipelines' models once, then beats (:class:`~.records.WorkerInfo`:
capacity, sessions, CPU, draining) and takes what its inbox says: ``take`` a
session (new, or another worker's that died or moved), ``move`` one away,
``drain``. All its sessions' leases are renewed together every
``renew_every_ms``; a lease the store no longer grants is *lost*: that session
stops at once, silently (its new owner speaks now). It also holds its *presence*
in the store while its process lives (:meth:`SessionStore.hold_presence`): when
the process dies, the dispatchers see it gone at once and fail its sessions over
without waiting for their leases' TTL. While the store cannot be
reached, sessions go on (their leases cannot lapse into anyone's hands: no
dispatcher can reach the store either) and catch up when it is back.

Draining (SIGTERM, :meth:`Worker.drain`): the worker says so in its next beat
(dispatchers place nothing more on it), hands each session over at its next
safe point -- between replies -- or, past half the deadline, at once, mid-reply
by snapshot; then it exits. A second SIGTERM hands the rest over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

import rspp
from rspp.cluster.compat import compatibility, reads
from rspp.cluster.metrics import WorkerMetrics
from rspp.cluster.owned import OwnedSession, delivered_since
from rspp.cluster.records import Checkpoint, Lease, Request, Task, WorkerInfo
from rspp.cluster.renewer import Renewer
from rspp.cluster.store import SessionStore, StoreError, StoreUnavailable, warm
from rspp.kernel import BuildError, Pipeline, PipelineSpec, build

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("rspp.cluster.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerConfig:
    id: str = field(default_factory=default_worker_id)
    capacity: int = 50
    lease_ttl_ms: int = 600
    renew_every_ms: int = 150
    heartbeat_every_ms: int = 200
    checkpoint_every_ms: int = 500
    #: How long a drain may take in all (the pod's grace period, less a margin).
    drain_deadline_s: float = 25.0
    #: A hand-over first sends the client this much of the reply's buffered audio (ms),
    #: to play while the next owner restores: a planned move is not heard as a gap.
    handover_ahead_ms: float = 300.0
    #: How long a released session is kept for the worker it was handed to.
    handoff_hold_ms: int = 2000
    #: A session with no input for this long has lost its caller (and every gateway).
    input_idle_s: float = 60.0
    #: Renew leases from a thread of their own when the store can open a second client
    #: (Redis): a saturated loop then delays no renewal (:mod:`rspp.cluster.renewer`).
    renew_from_thread: bool = True
    #: What checkpoints it reads (default: :func:`compatibility`; tests play older workers).
    compatibility: str = field(default_factory=compatibility)


class Worker:
    """Sessions of some pipelines on this process, owned by lease (see the module docstring)."""

    def __init__(
        self,
        store: SessionStore,
        pipelines: Mapping[str, Pipeline],
        config: WorkerConfig | None = None,
        *,
        resources: Mapping[str, Any] | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not pipelines:
            raise ValueError("a worker needs at least one pipeline")
        self.store = store
        misnamed = [f"{key!r} is {p.name!r}" for key, p in pipelines.items() if key != p.name]
        if misnamed:  # checkpoints and placements name pipelines by their spec's name
            raise ValueError(f"pipelines must be keyed by their names: {', '.join(misnamed)}")
        self.pipelines = dict(pipelines)
        self.config = config or WorkerConfig()
        self.resources = resources
        self.metrics = metrics or WorkerMetrics()
        self.metrics.capacity.set(self.config.capacity)
        self.sessions: dict[str, OwnedSession] = {}
        self.draining = False
        self.ready = False
        self.store_ok = True
        self._hurry = False
        self._stop = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._cpu = (time.process_time(), time.monotonic(), 0.0)
        self._trouble_logged = 0.0
        self._built: dict[bytes, Pipeline] = {}
        #: The task that owns each session (cancelled by a stop).
        self._owning: dict[str, asyncio.Task[None]] = {}
        self._renewer: Renewer | None = None
        #: Takes in progress (several at once: a dead worker's sessions arrive together).
        self._taking: dict[str, asyncio.Task[None]] = {}

    @property
    def id(self) -> str:
        return self.config.id

    # -- running ----------------------------------------------------------------------------

    async def run(self, *, load: bool = True) -> None:
        """Load the models, then serve until drained (or cancelled)."""
        if load:
            from rspp.agent import preload

            for pipeline in self.pipelines.values():
                await preload(pipeline)
        await warm(self.store, min(self.config.capacity, 32))  # (for a burst of takes)
        self.ready = True
        renewer = self._renewer = self._threaded_renewer()
        try:
            async with asyncio.TaskGroup() as tg:
                self._group = tg
                loops = [
                    tg.create_task(self._beat()),
                    tg.create_task(self._inbox()),
                    tg.create_task(self._watch_loop()),
                ]
                if renewer is None:
                    loops.append(tg.create_task(self._renew()))
                    loops.append(tg.create_task(self.store.hold_presence(self.id)))
                else:
                    renewer.start()
                await self._stop.wait()
                for one in [*loops, *self._taking.values(), *self._owning.values()]:
                    one.cancel()  # sessions left now lapse to other workers (a crash, for them)
        finally:
            if renewer is not None:
                await renewer.stop()
        log.info("worker %s: stopped", self.id)

    def _threaded_renewer(self) -> Renewer | None:
        fork = getattr(self.store, "fork", None)
        if not self.config.renew_from_thread or fork is None:
            return None  # (the in-process store lives in this loop: renewed from it)
        ttl = self.config.lease_ttl_ms
        return Renewer(
            fork,
            ttl_ms=ttl,
            every_s=self.config.renew_every_ms / 1000,
            alive_within_s=ttl * 2 / 3000,
            on_result=self._renewed,
            on_trouble=self._renewal_trouble,
            presence=self.id,
        )

    def _owned_leases(self) -> tuple[Lease, ...]:
        return tuple(s.lease for s in self.sessions.values() if not s.outcome)

    def _renewed(self, leases: Sequence[Lease], results: list[bool], took_s: float) -> None:
        """What a renewal round (in the loop, or from the renewer's thread) was answered."""
        ttl = self.config.lease_ttl_ms
        self.metrics.store.observe("renew", took_s * 1000)
        if took_s * 1000 > ttl / 3:
            log.warning(
                "worker %s: renewing %d leases took %.0f ms (lease TTL %d ms)",
                self.id,
                len(leases),
                took_s * 1000,
                ttl,
            )
        for lease, ok in zip(leases, results, strict=True):
            if ok:
                self.metrics.renewals.labels("ok").inc()
                continue
            one = self.sessions.get(lease.session)
            if one is not None and one.lease == lease and not one.outcome:
                log.warning("worker %s: lease of %s lost", self.id, one.session_id)
                self.metrics.renewals.labels("lost").inc()
                self.metrics.lost.inc()
                one.lose()

    def _renewal_trouble(self, leases: Sequence[Lease], exc: StoreError) -> None:
        self.metrics.store.failed("renew")  # (as StoreTimer.time counted it, before the thread)
        self.metrics.renewals.labels("store_down").inc(len(leases))
        self.store_trouble(exc)

    def stop(self) -> None:
        """Stop at once (sessions are not handed over: a crash, as far as they know)."""
        self._stop.set()

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            pipelines=list(self.pipelines),
            capacity=self.config.capacity,
            active=len(self.sessions),
            cpu=self._cpu[2],
            draining=self.draining,
            abi=self.config.compatibility,
            version=rspp.__version__,
        )

    async def _beat(self) -> None:
        every = self.config.heartbeat_every_ms / 1000
        while True:
            cpu, wall, _ = self._cpu
            now_cpu, now_wall = time.process_time(), time.monotonic()
            if now_wall > wall:
                self._cpu = (now_cpu, now_wall, (now_cpu - cpu) / (now_wall - wall))
            try:
                async with self.metrics.store.time("heartbeat"):
                    await self.store.heartbeat(self.info())
                self.store_ok = True
            except StoreUnavailable as exc:
                self.store_trouble(exc)
            await asyncio.sleep(every)

    async def _watch_loop(self, every_s: float = 0.05) -> None:
        """Measure the event loop's lateness: past a third of the lease TTL, say so (a loop
        stalled that long risks its leases; the metric shows how close it comes)."""
        loop = asyncio.get_running_loop()
        warn_ms = self.config.lease_ttl_ms / 3
        while True:
            due = loop.time() + every_s
            await asyncio.sleep(every_s)
            late_ms = max(0.0, (loop.time() - due) * 1000)
            self.metrics.loop_lag_ms.observe(late_ms)
            if self._renewer is not None:
                self._renewer.tick(self._owned_leases())  # alive, and what to renew
            if late_ms > warn_ms:
                log.warning(
                    "worker %s: event loop stalled %.0f ms (%d sessions; lease TTL %d ms)",
                    self.id,
                    late_ms,
                    len(self.sessions),
                    self.config.lease_ttl_ms,
                )

    async def _renew(self) -> None:
        """Renewals from the loop itself (a store with no second client: in-process)."""
        every = self.config.renew_every_ms / 1000
        while True:
            await asyncio.sleep(every)
            leases = self._owned_leases()
            if not leases:
                continue
            began = time.monotonic()
            try:
                results = await self.store.renew(leases, self.config.lease_ttl_ms)
            except StoreUnavailable as exc:
                self._renewal_trouble(leases, exc)
                continue
            self._renewed(leases, results, time.monotonic() - began)

    async def _inbox(self) -> None:
        after = "$"
        while True:
            try:
                found = await self.store.tasks(self.id, after, 1000)
            except StoreUnavailable as exc:
                self.store_trouble(exc)
                await asyncio.sleep(0.1)
                continue
            for entry_id, raw in found:
                after = entry_id
                try:
                    task = msgspec.msgpack.decode(raw, type=Task)
                except msgspec.DecodeError:
                    log.warning("worker %s: undecodable task dropped", self.id)
                    continue
                await self._do(task)

    async def _do(self, task: Task) -> None:
        if task.do == "take":
            sid = task.session
            if sid in self.sessions or sid in self._taking:
                return
            assert self._group is not None
            taking = self._group.create_task(self.take(sid, task.why or "open"))
            self._taking[sid] = taking
            taking.add_done_callback(lambda _: self._taking.pop(sid, None))
            return
        pending = self._taking.get(task.session)
        if pending is not None:
            await asyncio.wait([pending])  # a move or swap of a session being taken: after it
        if task.do == "move":
            owned = self.sessions.get(task.session)
            if owned is not None:
                await owned.hand_over(task.to, "move")
        elif task.do == "swap":
            owned = self.sessions.get(task.session)
            if owned is not None and self._group is not None:
                self._group.create_task(self._swap(owned, task))
        elif task.do == "drain":
            self.drain()

    def store_trouble(self, exc: StoreError) -> None:
        """The store is away: report it (once a second at most); the calls go on."""
        self.store_ok = False
        now = time.monotonic()
        if now - self._trouble_logged > 1.0:
            self._trouble_logged = now
            log.warning("worker %s: store unavailable (%s); calls go on, no failover", self.id, exc)

    # -- sessions ---------------------------------------------------------------------------

    async def take(self, sid: str, why: str) -> None:
        """Own ``sid`` (a new one, or one whose owner died or moved it here)."""
        asked = time.perf_counter_ns()
        if sid in self.sessions:
            return
        others = sum(1 for one in self._taking if one != sid)  # takes beside this one
        if self.draining or len(self.sessions) + others >= self.config.capacity:
            await self._place_elsewhere(sid, why)
            return
        store = self.store
        try:
            # One round trip: the lease, and once it is ours (no older owner writes after
            # that), the record, the checkpoint and the output's tail.
            taken = await store.take(sid, self.id, self.config.lease_ttl_ms, 300)
            taken_ns = time.perf_counter_ns()
            if taken is None:
                return  # another worker has it (two placements raced; one wins)
            lease, record, raw, tail = taken
            if record is None or record.state in ("ended", "refused"):
                await store.finish(lease)  # over (or never was): nobody is to own it
                return
        except StoreUnavailable as exc:
            self.store_trouble(exc)
            return
        checkpoint = msgspec.msgpack.decode(raw, type=Checkpoint) if raw else None
        name = checkpoint.pipeline if checkpoint else record.pipeline
        pipeline = self._pipeline(name, checkpoint.spec if checkpoint else None)
        if pipeline is None:
            log.error("worker %s: no pipeline %r for session %s", self.id, name, sid)
            await self.store.release(lease)
            await self._place_elsewhere(sid, why)
            return
        delivered: dict[int, int] = {}
        if checkpoint is not None and why != "swap":
            delivered = delivered_since(checkpoint, tail)
        owned = OwnedSession(self, lease, pipeline, checkpoint, why, asked, delivered)
        owned.steps["taken"] = taken_ns
        self.sessions[sid] = owned
        self.metrics.active.set(len(self.sessions))
        assert self._group is not None
        self._owning[sid] = self._group.create_task(self._own(owned, record.pipeline))

    def _pipeline(self, name: str, spec: bytes | None) -> Pipeline | None:
        """The pipeline ``name``, or the one ``spec`` describes (built once per spec)."""
        if spec is None:
            return self.pipelines.get(name)
        built = self._built.get(spec)
        if built is None:
            try:
                built = build(msgspec.msgpack.decode(spec, type=PipelineSpec))
            except (BuildError, msgspec.DecodeError) as exc:
                log.error("worker %s: a checkpoint's pipeline does not build: %s", self.id, exc)
                return None
            self._built[spec] = built
        return built

    async def _swap(self, owned: OwnedSession, task: Task) -> None:
        """Switch ``owned`` to another pipeline (or its own, reconfigured) at a turn boundary."""
        spec: bytes | None = None
        if task.config:
            base = owned.pipeline.spec
            nodes = [
                msgspec.structs.replace(n, config={**n.config, **task.config[n.name]})
                if n.name in task.config
                else n
                for n in base.nodes
            ]
            derived = msgspec.structs.replace(base, nodes=nodes, version=base.version + 1)
            spec = msgspec.msgpack.encode(derived)
            target = self._pipeline(derived.name, spec)
        else:
            target = self.pipelines.get(task.pipeline)
        if target is None:
            log.error("worker %s: cannot swap %s to %r", self.id, owned.session_id, task.pipeline)
            return
        session = owned.port.session
        deadline = time.monotonic() + 120.0
        while not owned.outcome and time.monotonic() < deadline:
            if session.turns.state.value == "listening" and not any(
                r.in_flight is not None or (r.inbox is not None and len(r.inbox))
                for r in session.queued
            ):
                from rspp.agent import preload

                await preload(target)  # its models, before the caller waits on them
                if not owned.outcome:
                    await owned.hand_over(self.id, "swap", swap_to=target, spec=spec)
                return
            await asyncio.sleep(0.02)

    def took(self, owned: OwnedSession, ms: float) -> None:
        """``owned`` made its first output (the caller hears it again)."""
        self.metrics.takeovers.labels(owned.why).inc()
        self.metrics.takeover_ms.labels(owned.why).observe(ms)
        # Where the time went: each step's end since the one before (ms), from the take's
        # start -- the store's (lease and checkpoint), the session built, started, its first
        # output.
        ends = [owned._asked_ns, *owned.steps.values(), time.perf_counter_ns()]
        split = "/".join(f"{(b - a) / 1e6:.0f}" for a, b in itertools.pairwise(ends))
        log.info(
            "worker %s: session %s taken (%s, token %d) in %.1f ms (%s: %s)",
            self.id,
            owned.session_id,
            owned.why,
            owned.lease.token,
            ms,
            "/".join(owned.steps) + "/output",
            split,
        )

    async def _own(self, owned: OwnedSession, pipeline: str) -> None:
        sid = owned.session_id
        try:
            await owned.run()
            if owned.outcome == "refused":
                self.metrics.refused.inc()
                await self.store.release(owned.lease)
                await self._place_elsewhere(sid, "refused", needs=owned.needs)
            elif owned.outcome == "moved":
                await self._hand_over(owned, pipeline)
        except StoreUnavailable as exc:
            self.store_trouble(exc)
        except Exception:
            log.exception("worker %s: session %s failed", self.id, sid)
        finally:
            if self.sessions.get(sid) is owned:
                del self.sessions[sid]
                self._owning.pop(sid, None)
            self.metrics.active.set(len(self.sessions))
        if owned.outcome == "moved" and owned.handover_to == self.id:
            await self.take(sid, owned.handover_why)  # a swap: back here, in the new pipeline

    async def _hand_over(self, owned: OwnedSession, pipeline: str) -> None:
        to = owned.handover_to
        if not owned.released:  # (its last checkpoint did not release it: no snapshot?)
            released = await self.store.release(
                owned.lease, to=to, hold_ms=self.config.handoff_hold_ms
            )
            if not released:
                return  # lost meanwhile: the new owner has it
        self.metrics.migrations.labels(owned.handover_why).inc()
        if to == self.id:
            return  # a swap: taken again here (_own)
        if to:
            await self.store.tell(
                to, msgspec.msgpack.encode(Task(do="take", session=owned.session_id, why="move"))
            )
        else:
            await self.store.request(
                msgspec.msgpack.encode(
                    Request(
                        session=owned.session_id, pipeline=pipeline, why="move", exclude=[self.id]
                    )
                )
            )

    async def _place_elsewhere(self, sid: str, why: str, needs: str = "") -> None:
        record = await self.store.record(sid)
        if record is None:
            return
        request = Request(
            session=sid, pipeline=record.pipeline, why=why, exclude=[self.id], needs=needs
        )
        await self.store.request(msgspec.msgpack.encode(request))

    # -- draining ---------------------------------------------------------------------------

    async def _takers(self) -> set[str]:
        """The pipelines some other live worker could take a session of from here now."""
        try:
            workers = await self.store.workers(self.config.heartbeat_every_ms * 5)
        except StoreError:
            return set()
        return {
            name
            for w in workers
            if w.id != self.id and w.room > 0 and reads(w.abi, self.config.compatibility)
            for name in w.pipelines
        }

    def drain(self) -> None:
        """Stop taking sessions and hand every one over (a second call: at once)."""
        if self.draining:
            self._hurry = True
            log.info("worker %s: drain again: handing every session over now", self.id)
            return
        self.draining = True
        self.metrics.draining.set(1)
        if self._group is None:  # still loading its models: it owns nothing yet
            log.info("worker %s: drained before it started", self.id)
            self._stop.set()
            return
        log.info(
            "worker %s: draining %d sessions (deadline %.0f s)",
            self.id,
            len(self.sessions),
            self.config.drain_deadline_s,
        )
        self._group.create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain_deadline_s
        patient_until = time.monotonic() + self.config.drain_deadline_s / 2
        with contextlib.suppress(StoreError):
            await self.store.heartbeat(self.info())  # no more placements here, now
        warned = False
        while self.sessions and time.monotonic() < deadline:
            at_once = self._hurry or time.monotonic() >= patient_until
            takers = await self._takers()
            for owned in list(self.sessions.values()):
                if owned.outcome:
                    continue
                if owned.pipeline.name not in takers:
                    if not warned:  # a rolling upgrade with no new worker yet, say
                        log.error(
                            "worker %s: no live worker reads checkpoints %s for %r; keeping"
                            " %s until one comes",
                            self.id,
                            self.config.compatibility,
                            owned.pipeline.name,
                            owned.session_id,
                        )
                        warned = True
                    continue
                if at_once or owned.port.session.turns.state.value == "listening":
                    await owned.hand_over("", "drain")
            await asyncio.sleep(0.02)
        if self.sessions:
            log.error(
                "worker %s: drain deadline passed with %d sessions", self.id, len(self.sessions)
            )
        self.stop()
