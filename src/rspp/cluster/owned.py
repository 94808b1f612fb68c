"""One session a worker owns: input from the log, output to the gateway, checkpoints.

:class:`OwnedSession` is the thin shell around a kernel session that makes it
movable. Its lease is the worker's; the session's incarnation is the lease's
token, so every output event names the owner that made it. It

* takes its input from the session's input log, from just after its
  checkpoint (a new owner replays what the old one had taken in since), with
  the log's entry numbers as input sequence numbers (a replay is idempotent);
* writes what the caller sees to the output stream, fenced by the lease, each
  event stamped with its ordinal (:mod:`rspp.cluster.stamps`);
* checkpoints -- snapshot, stamps, input position -- at each reply's end and
  every ``checkpoint_every_ms`` while anything happens, always *after* the
  output that preceded it (one ordered writer), so that a new owner never
  resumes past output that was not written;
* ends in one of four ways (:attr:`outcome`): ``ended`` (the call is over:
  lease finished), ``moved`` (handed over: checkpoint at this instant, lease
  released to the next owner), ``lost`` (another owner took over: stop at once,
  silent) and ``refused`` (its checkpoint cannot be restored here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from rspp.cluster.compat import needs_of
from rspp.cluster.records import Checkpoint, Lease, OutputEntry
from rspp.cluster.stamps import OutputStamps
from rspp.cluster.store import Fenced, StoreUnavailable
from rspp.events import DecodeError, Event, MsgpackCodec
from rspp.kernel import (
    InvalidInput,
    Overloaded,
    Pipeline,
    SessionClosed,
    SessionSnapshot,
    SnapshotError,
)
from rspp.observability import watch
from rspp.transports.port import LocalPort, local_port

if TYPE_CHECKING:
    from rspp.cluster.worker import Worker

__all__ = ["OwnedSession", "delivered_since"]

log = logging.getLogger("rspp.cluster.worker")

_CODEC = MsgpackCodec()
_ENTRY = msgspec.msgpack.Encoder()
_ENTRY_DECODER = msgspec.msgpack.Decoder(OutputEntry)
#: Output kept while the store is away, at most (then the oldest goes; the caller would
#: hear it late anyway, and "heard" is what the client reports, so nothing is misrecorded).
OUTBOX_LIMIT = 500


class SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines that name the worker, the session, its owner's token and the turn."""

    def __init__(self, owned: OwnedSession) -> None:
        super().__init__(log, {})
        self.owned = owned

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        o = self.owned
        session = o.port.session
        turn = session.turns.active or session.turns.fence
        extra = {"session": o.session_id, "turn": turn, "worker": o.worker.id}
        kwargs["extra"] = {**extra, "token": o.lease.token, **kwargs.get("extra", {})}
        head = f"worker={o.worker.id} session={o.session_id} token={o.lease.token} turn={turn}"
        return f"{head}: {msg}", kwargs


class OwnedSession:
    """A session owned by lease on this worker (see the module docstring)."""

    def __init__(
        self,
        worker: Worker,
        lease: Lease,
        pipeline: Pipeline,
        checkpoint: Checkpoint | None,
        why: str,
        asked_ns: int,
        delivered: dict[int, int] | None = None,
    ) -> None:
        """``delivered``: per turn, audio frames the client already has past the checkpoint
        (:func:`delivered_since`): the restored output sends them without pacing."""
        self.worker = worker
        self.lease = lease
        self.pipeline = pipeline
        self.why = why
        self._asked_ns = asked_ns
        #: When each step of the take ended (perf_counter ns): the "taken" log line's split.
        self.steps: dict[str, int] = {}
        self.store = worker.store
        self.outcome = ""
        self.input_seq = checkpoint.input_seq if checkpoint else 0
        self.stamps = OutputStamps(checkpoint.stamps if checkpoint else None)
        self._restored = checkpoint is not None
        self._outbox: list[bytes] = []
        self._checkpoint: Checkpoint | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._quiet = False
        self._dirty = False
        self._first_output = True
        snapshot = (
            msgspec.msgpack.decode(checkpoint.snapshot, type=SessionSnapshot)
            if checkpoint
            else None
        )
        if snapshot is not None and delivered:
            _tell_outputs(snapshot, delivered)
        self._snapshot = snapshot
        self.port: LocalPort = local_port(
            pipeline,
            lease.session,
            resources=worker.resources,
            snapshot=snapshot,
            incarnation=lease.token,
            swap=bool(checkpoint and checkpoint.swap),
        )
        #: The pipeline spec to record in checkpoints when it is not one offered by name.
        self.spec = checkpoint.spec if checkpoint else None
        self.port.listen(self._output)
        self._reader: asyncio.Task[None] | None = None
        self.log = SessionLog(self)
        #: Set when its checkpoint is refused here: what a worker must read to take it.
        self.needs = ""

    @property
    def session_id(self) -> str:
        return self.lease.session

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the session until it ends, moves or is lost."""
        session = self.port.session
        watch(session, worker=self.worker.id, incarnation=self.lease.token)  # logs, traces
        self.steps["built"] = time.perf_counter_ns()
        try:
            await session.start()
            self.steps["started"] = time.perf_counter_ns()
        except SnapshotError as exc:
            self.outcome = "refused"
            self.log.error("its checkpoint is refused here: %s", exc)
            if self._snapshot is not None:
                self.needs = needs_of(self._snapshot.format, self._snapshot.abi)
            return
        try:
            async with asyncio.TaskGroup() as tg:
                self._reader = tg.create_task(self._read_input())
                writer = tg.create_task(self._write())
                ticker = tg.create_task(self._tick())
                await self._done.wait()
                self._reader.cancel()
                ticker.cancel()
                if self.outcome == "lost":
                    writer.cancel()
                else:
                    # The writer flushes what is left (and the hand-over checkpoint), then
                    # ends by itself: it is never cancelled in the middle of a write that
                    # must land (a move's last checkpoint), unless the store stays away.
                    self._wake.set()
                    moving = self.outcome == "moved"
                    limit = self.worker.config.drain_deadline_s if moving else 5.0
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(writer), limit)
                    if not writer.done():
                        writer.cancel()
        finally:
            self._quiet = True
            if session.running:
                await session.close(self.outcome or "closed")
        if self.outcome == "ended":
            try:
                await self.store.finish(self.lease)
                await self.store.update(self.session_id, state="ended")
            except StoreUnavailable:
                self.log.warning("ended; the store did not hear it")

    def stop(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
        self._done.set()

    def lose(self) -> None:
        """Another owner holds the session now: not another word, not another write."""
        if self.outcome in ("", "moved"):
            self.outcome = "lost"
        self._quiet = True
        self._outbox.clear()
        self._checkpoint = None
        self._done.set()

    async def hand_over(
        self, to: str, why: str, *, swap_to: Pipeline | None = None, spec: bytes | None = None
    ) -> None:
        """Checkpoint at this instant, stop, and release the lease to the next owner.

        ``swap_to``: the next owner (this worker) restores it into that pipeline.
        """
        if self._done.is_set():
            return
        if swap_to is None:
            self._play_ahead(self.worker.config.handover_ahead_ms)
        if self._reader is not None:
            self._reader.cancel()  # what comes now stays in the log for the next owner
        self._quiet = True
        self._capture()
        if swap_to is not None and self._checkpoint is not None:
            self._checkpoint.pipeline = swap_to.name
            self._checkpoint.swap = True
            self._checkpoint.spec = spec
        self.handover_to = to
        self.handover_why = why
        # run() flushes output and the checkpoint, which releases the lease to ``to``.
        self.stop("moved")

    handover_to = ""
    handover_why = ""
    #: The hand-over's last checkpoint released the lease too (to ``handover_to``).
    released = False

    def _play_ahead(self, ms: float) -> None:
        """Send the client up to ``ms`` of the reply's buffered audio now, before the
        checkpoint: it plays while the next owner restores (make before break)."""
        session = self.port.session
        if ms <= 0 or not session.running:
            return
        from rspp.nodes.audio_output import AudioOutput

        for plan in self.pipeline.nodes:
            node = session.node(plan.name)
            if isinstance(node, AudioOutput):
                node.play_ahead(ms)
        session.timers.fire_due(session.clock.now_ns())  # they leave now, as the node

    # -- output -----------------------------------------------------------------------------

    def _output(self, event: Event) -> None:
        """The port's listener: in the session's own call, for every event the caller sees."""
        if self._quiet:
            return
        kind = event.kind
        if kind == "session.start" and self._restored:
            return  # the caller has had its start
        if self._first_output:
            self._first_output = False
            self.worker.took(self, (time.perf_counter_ns() - self._asked_ns) / 1e6)
        index = self.stamps.stamp(event)
        self._outbox.append(
            _ENTRY.encode(OutputEntry(self.lease.token, event.turn, index, _CODEC.encode(event)))
        )
        self._dirty = True
        if len(self._outbox) > OUTBOX_LIMIT:
            del self._outbox[0]
            self.worker.metrics.output_dropped.inc()
        if kind in ("turn.done", "turn.interrupted"):
            self._capture()
        elif kind == "session.end":
            self.stop("ended")
        self._wake.set()

    def _capture(self) -> None:
        """A checkpoint of this instant, written after the output queued before it."""
        session = self.port.session
        if not session.running or self.outcome:
            return  # (after a hand-over's checkpoint, no other may be taken)
        try:
            snap = session.snapshot()
        except Exception:
            self.log.exception("snapshot failed")
            return
        self._checkpoint = Checkpoint(
            token=self.lease.token,
            pipeline=self.pipeline.name,
            input_seq=snap.input_seq,
            snapshot=msgspec.msgpack.encode(snap),
            stamps=self.stamps.saved(),
            taken_ms=time.time_ns() // 1_000_000,
            spec=self.spec,
        )
        self._dirty = False
        self._wake.set()

    async def _write(self) -> None:
        """The one ordered writer: output entries, then the checkpoint taken after them."""
        store = self.store
        timer = self.worker.metrics.store
        backoff = 0.05
        while True:
            if self._done.is_set():
                return  # everything before the end is written
            await self._wake.wait()
            self._wake.clear()
            while self._outbox or self._checkpoint is not None:
                if self.released:
                    return  # handed over: the next owner writes from here on
                batch, self._outbox = self._outbox, []
                checkpoint, self._checkpoint = self._checkpoint, None
                # A move's checkpoint (the hand-over's: none is taken after it) also
                # releases the lease, in the same round trip.
                last = self.outcome == "moved"
                try:
                    if checkpoint is not None:
                        async with timer.time("save"):
                            await store.save(
                                self.lease,
                                msgspec.msgpack.encode(checkpoint),
                                checkpoint.input_seq,
                                output=batch,  # (the output first, in the same round trip)
                                handoff=self.handover_to if last else None,
                                hold_ms=self.worker.config.handoff_hold_ms,
                            )
                        self.released = last
                        self.worker.metrics.checkpoints.labels("ok").inc()
                    elif batch:
                        async with timer.time("append_output"):
                            await store.append_output(self.lease, batch)
                    batch = []
                    backoff = 0.05
                except Fenced:
                    self.log.warning("fenced (a newer owner exists)")
                    self.worker.metrics.lost.inc()
                    self.lose()
                    return
                except StoreUnavailable as exc:
                    # Keep it for when the store is back (the call goes on meanwhile).
                    self._outbox[:0] = batch
                    del self._outbox[: max(0, len(self._outbox) - OUTBOX_LIMIT)]
                    if self._checkpoint is None:
                        self._checkpoint = checkpoint
                    self.worker.store_trouble(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)

    async def _tick(self) -> None:
        """A checkpoint every ``checkpoint_every_ms`` while something happened."""
        every = self.worker.config.checkpoint_every_ms / 1000
        while True:
            await asyncio.sleep(every)
            if self.outcome:
                return  # (a hand-over took the last checkpoint: none may follow it)
            if self._dirty or self.port.session.ingress.seq != self.input_seq:
                self.input_seq = self.port.session.ingress.seq
                self._capture()

    # -- input ------------------------------------------------------------------------------

    async def _read_input(self) -> None:
        session = self.port.session
        store = self.store
        after = self.input_seq
        backoff = 0.05
        idle_s = self.worker.config.input_idle_s
        heard_from = time.monotonic()
        while True:
            try:
                entries = await store.read_input(self.session_id, after, 1000)
                backoff = 0.05
                now = time.monotonic()
                if entries:
                    heard_from = now
                elif now - heard_from > idle_s:
                    self.log.info("no input for %.0f s: ended", idle_s)
                    await session.close("abandoned")
                    return
            except StoreUnavailable as exc:
                self.worker.store_trouble(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            for seq, raw, close in entries:
                if close is not None:
                    await session.close(close)  # its session.end ends the call
                    return
                after = seq
                if raw is None:
                    continue
                try:
                    event = _CODEC.decode(raw)
                except DecodeError as exc:
                    session.count_drop("ingress", "?", "undecodable")
                    self.log.warning("undecodable input dropped: %s", exc)
                    continue
                while True:
                    try:
                        session.push(event, seq=seq)
                        break
                    except Overloaded:
                        await session.writable(event.kind)
                    except InvalidInput as exc:
                        self.log.info("input refused: %s", exc)
                        break
                    except SessionClosed:
                        return


def delivered_since(checkpoint: Checkpoint, tail: list[bytes]) -> dict[int, int]:
    """Per turn, the audio frames a previous owner wrote after ``checkpoint`` was taken.

    The output stream's tail says how far each turn's audio got (its ordinals); the
    checkpoint's stamps say how far the snapshot had got. The difference is what a
    new owner is about to make again: the gateway would drop it, the caller would wait
    for it in real time, so the restored output sends it at once instead.
    """
    newest: dict[int, int] = {}
    for raw in tail:
        try:
            entry = _ENTRY_DECODER.decode(raw)
            kind = _CODEC.decode(entry.event).kind
        except (msgspec.DecodeError, DecodeError):
            continue
        if kind == "audio.out" and entry.index > newest.get(entry.turn, 0):
            newest[entry.turn] = entry.index
    stamps = checkpoint.stamps
    found = {turn: n - stamps.get(f"{turn}|audio.out", 0) for turn, n in newest.items()}
    return {turn: n for turn, n in found.items() if n > 0}


def _tell_outputs(snapshot: SessionSnapshot, delivered: dict[int, int]) -> None:
    """Put ``delivered`` into the snapshot's audio outputs' state (see AudioOutputState)."""
    from rspp.nodes.audio_output import AudioOutputState

    for node in snapshot.nodes.values():
        if node.type != "audio_output" or node.state is None:
            continue
        try:
            state = msgspec.msgpack.decode(node.state, type=AudioOutputState)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the restore reports it
        state.delivered = {turn: n for turn, n in delivered.items() if turn > snapshot.turns.fence}
        node.state = msgspec.msgpack.encode(state)
