"""Chaos on a real cluster: many live calls, one fault of each kind, counted at the clients.

    python benchmarks/chaos.py                  # 50 calls, 3 workers (about 80 s)
    python benchmarks/chaos.py --quick          # 8 calls: a smoke run
    python benchmarks/chaos.py --calls 60 --workers 4 --out out/chaos.json
    python benchmarks/chaos.py --lifecycle      # a rolling update and a scale-down

The cluster is :class:`~rspp.cluster.local.ProcessCluster`: a private
``redis-server``, two dispatchers, ``--workers`` workers and two gateways (g1,
g2), each its own ``rspp`` process, on the demo pipeline with the test kit's
fake ASR/LLM/TTS (realistic latency profiles, real time). Every call is the
Python client (:class:`~rspp.client.Call` with ``reconnect_attempts`` and the
other gateway as ``fallback_urls``; half the calls start on each gateway)
playing a four-line script (:class:`~rspp.client.Caller`), the calls started a
little apart; the replies are long (9-13 s each) so that the faults land mid-reply.

While the calls go on, one fault of each kind, six seconds apart so that each
one's effect can be told apart:

* ``sigkill`` -- SIGKILL of the worker with the most calls mid-reply (a new
  worker, under a new name, is started two seconds later);
* ``sigterm`` -- SIGTERM of the busiest worker: it drains (hands each call over
  between replies) and must exit 0; a replacement is started at once, as a
  rolling update would;
* ``sigstop`` -- SIGSTOP of the busiest worker for 2 s (past the 600 ms lease
  TTL), then SIGCONT: it wakes owning nothing and must say nothing;
* ``move`` -- a planned migration (:func:`rspp.cluster.dispatcher.request_move`,
  what ``rspp sessions move`` does) of five calls early in a reply;
* ``gateway`` -- SIGKILL of g1: its clients reconnect through g2; g1 is restarted;
* ``redis`` -- a restart of the Redis server, down for a second.

Everything is counted *at the clients*, from what they received and played
(:func:`rspp.testing.listening.judge`): calls dropped (the client raised, gave
up waiting for a reply, or the call ended before its script did), user
utterances never answered, replies whose words were not received and played
exactly once (doubled), frames of an owner older than one already received
(``stale_owner_frames``: ``call.protocol.stale``). Also counted, not a loss:
frames the client received twice from the same owner and dropped
(``resent_frames``), and lines the caller spoke while its call had no connection
(the client drops that audio: ``utterances_cut_by_disconnect``).

The **pause** of a fault is, for each call it hit while a reply was arriving,
the longest silence inside a reply that began before the next fault (and within
5 s); the **takeover**, the time from the fault to the first audio frame of the
new incarnation (``inc``) at that client. Each takeover is also split in the
store's own times: until the new owner's first write, then the output it made
again from its checkpoint (which the gateway drops as already heard) until its
first new audio. Targets: after a SIGKILL a pause p95 <= 1 s and max <= 2 s;
a planned migration <= 150 ms; every loss count zero.

The machine is measured too, because on two shared cores 50 real-time calls and
a dozen processes compete for the CPU: the busy share, CPU seconds per role,
this (client) process's event-loop lag, silences inside replies that no fault
explains, failovers the dispatchers started for owners no fault hit, and new
incarnations at clients that no fault explains.

``--lifecycle`` plays what Kubernetes does to worker pods instead of the faults: a
rolling update of every worker (``rolling``: a new pod started and ready, then an old
one sent SIGTERM and, if it has not exited by ``--grace-s``, SIGKILL -- the manifests'
maxSurge 1 / maxUnavailable 0 -- one old pod after another), then a scale-down by one
(``scaledown``). The workers' drain deadline is the grace period less a margin, as in
``deploy/k8s``; the target is zero losses and every pod drained in its grace period.

The last line printed is one JSON object (with ``--out``, also written to a file
with the details: each fault's calls, each call with a loss).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from redis.exceptions import RedisError

from rspp.client import Call, Caller, Disconnected, Line
from rspp.cluster import keys
from rspp.cluster.dispatcher import MoveRefused, request_move
from rspp.cluster.local import ProcessCluster
from rspp.cluster.records import OutputEntry
from rspp.cluster.redis_store import RedisStore
from rspp.cluster.store import StoreError
from rspp.demo import DemoLine, demo_pipeline
from rspp.events import MsgpackCodec
from rspp.testing.audio import speech_like
from rspp.testing.fakes import normalize
from rspp.testing.listening import judge
from rspp.transports.call.client import BotAudio, Played, Received
from rspp.transports.call.wire import AudioFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import percentile  # benchmarks/ is on sys.path when a script runs

__all__ = [
    "Chaos",
    "Run",
    "Scenario",
    "chaos_cluster",
    "details",
    "main",
    "play",
    "run_chaos",
    "summary",
]

FMT = AudioFormat(sample_rate=16000)  # the pipeline's own rate: nothing is resampled
#: The kinds of fault, in the order they strike.
KINDS = ("sigkill", "sigterm", "sigstop", "move", "gateway", "redis")
#: What Kubernetes does to worker pods (``--lifecycle``): a rolling update of every worker
#: (a new pod ready first, then SIGTERM of an old one, SIGKILL at the grace period: the
#: manifests' maxSurge 1 / maxUnavailable 0), then a scale-down by one.
LIFECYCLE = ("rolling", "scaledown")
#: Kinds that hand a call to a new owner (a new incarnation at the client).
OWNER_CHANGES = ("sigkill", "sigterm", "sigstop", "move", *LIFECYCLE)
#: Kinds whose takeover is timed (a drain hands calls over between replies: nothing to time).
TIMED = ("sigkill", "sigstop", "move")
_CODEC = MsgpackCodec()
_ENDS = frozenset({"turn.done", "turn.interrupted"})
#: A silence longer than this inside a reply, that no fault explains, is noise worth counting.
NOISE_MS = 100.0

SCRIPT = [
    DemoLine(
        "Hello there, can you help me plan a trip?",
        "Of course, I would be glad to help you plan it. Tell me where you would like to go, "
        "when you want to leave, how long you can stay, and what kind of trip you enjoy most.",
    ),
    DemoLine(
        "I want to visit the mountains in the summer.",
        "The mountains in summer are lovely: long days, cool nights and green valleys. "
        "You could stay in a small village, walk to the lakes in the morning, and take "
        "the cable car up to the ridge for the views in the evening light.",
    ),
    DemoLine(
        "What should I pack for the hikes?",
        "Pack good boots, a light rain jacket, a warm layer for the evenings, a hat, sun "
        "cream and a water bottle. A small first aid kit and a paper map are worth taking "
        "too, since the phone signal can be weak high up in the valleys.",
    ),
    DemoLine(
        "Thanks, that is very helpful, goodbye.",
        "You are very welcome. I hope the weather is kind to you and that the trip is "
        "everything you hoped for. Enjoy the mountains, and have a safe journey home!",
    ),
]


@dataclass(frozen=True)
class Scenario:
    """One chaos run: how many calls, how many workers, when the faults strike."""

    calls: int = 50
    workers: int = 3
    #: Calls start this far apart (seconds) in all: a wave, not a stampede.
    stagger_s: float = 5.0
    #: The first fault strikes this long after the first call started; then one per spacing.
    first_fault_s: float = 9.0
    spacing_s: float = 6.0
    #: And at least this long after the one before was struck (a fault that waited for
    #: its moment -- the move waits for calls early in a reply -- does not run into the
    #: next: each pause is one fault's).
    min_gap_s: float = 3.0
    kinds: tuple[str, ...] = KINDS
    #: How long the SIGSTOP lasts (longer than the 600 ms lease TTL).
    stop_s: float = 2.0
    #: How many calls the planned migration moves.
    moves: int = 5
    #: How long after a SIGKILL the replacement worker is started.
    replace_after_s: float = 2.0
    #: How long g1 stays down after its SIGKILL.
    gateway_down_s: float = 1.0
    redis_down_s: float = 1.0
    #: Kill g1 only once each of its calls has this much output in the store (0: on time).
    #: A reattaching gateway reads a call's output stream from the start, 1000 entries a
    #: read: past that, a gateway dies late in a call (the small test makes sure of it).
    gateway_after_entries: int = 0
    #: Kill g1 only while each of its calls has received this much (ms) of a reply: the
    #: bot speaking, the caller silent (None: whenever its time comes).
    gateway_in_reply_ms: tuple[float, float] | None = None
    #: Lines of :data:`SCRIPT` each call says.
    lines: int = 4
    report_every_ms: float = 200.0
    #: The caller's microphone frames (ms): 20 as a browser sends; 40 halves the messages.
    frame_ms: float = 20.0
    #: A caller waiting longer than this for a reply gives up (the call counts as dropped).
    max_wait_s: float = 40.0
    #: A pod's grace period (``terminationGracePeriodSeconds``): SIGKILL this long after
    #: SIGTERM. The workers' drain deadline is this less ``drain_margin_s``, as in
    #: ``deploy/k8s`` (one value for both).
    grace_s: float = 20.0
    drain_margin_s: float = 5.0

    @property
    def worker_args(self) -> tuple[str, ...]:
        return ("--drain-deadline", f"{self.grace_s - self.drain_margin_s:g}")

    @property
    def capacity(self) -> int:
        """Per worker: enough for every call with any one worker down (and more)."""
        return self.calls


# -- what each client heard --------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A silence inside reply ``turn`` heard at the client, from ``start`` to ``end`` (loop s)."""

    turn: int
    start: float
    end: float

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


class Watch:
    """Follows one call's notices: silences inside replies, incarnations, the reply in flight."""

    def __init__(self, call: Call, expected: dict[str, str] | None = None) -> None:
        self.call = call
        #: What the (fake) LLM answers to each user line (normalized), to see text doubling.
        self.expected = expected or {}
        #: Per turn, when its reply text first stopped being a prefix of the expected reply.
        self.doubled_at: dict[int, float] = {}
        self.gaps: list[Gap] = []
        #: When audio of each incarnation first arrived (loop time).
        self.first_audio: dict[int, float] = {}
        #: The turn whose audio is arriving and whose ``turn.done`` has not.
        self.receiving = 0
        self.received_ms = 0.0
        #: Each lost connection: (loop time, close code, reason).
        self.disconnects: list[tuple[float, int | None, str]] = []
        #: When stale frames arrived (loop time, how many since the last notice).
        self.stale_at: list[tuple[float, int]] = []
        self._stale = 0
        self._end: dict[int, float] = {}
        self._bytes_per_s = 2 * FMT.channels * FMT.sample_rate
        call.on(self._on)

    def _on(self, notice: object) -> None:
        stale = self.call.protocol.stale
        if stale != self._stale:
            self.stale_at.append((asyncio.get_running_loop().time(), stale - self._stale))
            self._stale = stale
        if isinstance(notice, Disconnected):
            t = asyncio.get_running_loop().time()
            self.disconnects.append((t, notice.code, notice.reason))
        elif isinstance(notice, Played):
            end = self._end.get(notice.turn)
            if end is not None and notice.at > end + 0.001:
                self.gaps.append(Gap(notice.turn, end, notice.at))
            self._end[notice.turn] = notice.at + len(notice.pcm) / self._bytes_per_s
        elif isinstance(notice, BotAudio):
            frame = notice.frame
            if frame.inc not in self.first_audio:
                self.first_audio[frame.inc] = asyncio.get_running_loop().time()
            if (
                frame.turn != self.receiving
                and frame.turn > self.call.protocol.playout.cleared_through
            ):
                self.receiving, self.received_ms = frame.turn, 0.0
            self.received_ms += len(frame.pcm) * 1000 / self._bytes_per_s
        elif isinstance(notice, Received):
            event = notice.event
            if event.kind in _ENDS and event.turn >= self.receiving:
                self.receiving = 0
            elif event.kind == "llm.delta" and event.turn not in self.doubled_at:
                record = self.call.record.turns.get(event.turn)
                if record is not None:
                    want = self.expected.get(normalize(record.user))
                    if want is not None and not want.startswith(normalize(record.reply)):
                        self.doubled_at[event.turn] = asyncio.get_running_loop().time()

    @property
    def last_played(self) -> dict[int, float]:
        """Per turn, when its audio last stopped playing (loop time)."""
        return self._end

    @property
    def inc(self) -> int:
        """The newest incarnation heard so far."""
        last = self.call.protocol.last_pos
        return last[0] if last is not None else 0

    @property
    def mid_reply(self) -> bool:
        return self.receiving != 0

    @property
    def gateway(self) -> str:
        """The URL of the gateway the call is (or was last) connected to."""
        return self.call.url


@dataclass
class MicCaller(Caller):
    """A :class:`Caller` that notes when its microphone frames were dropped.

    The client drops audio sent while no connection is open (a microphone does not
    wait): a line spoken while the call reconnects reaches the server cut, or not at all.
    """

    dropped_at: list[float] = field(default_factory=list)

    async def _send(self, pcm: bytes) -> None:
        if not self.call.connected:
            self.dropped_at.append(asyncio.get_running_loop().time())
        await super()._send(pcm)

    def cut_ms(self) -> list[float]:
        """Per line spoken, how much of it (ms) the client dropped."""
        return [
            sum(s.start <= t <= s.end for t in self.dropped_at) * self.frame_ms for s in self.spoken
        ]


@dataclass
class CallResult:
    """One call's outcome, counted at its client."""

    index: int
    session: str = ""
    said: int = 0
    answered: int = 0
    doubled: list[tuple[int, str, str]] = field(default_factory=list)
    stale_frames: int = 0
    #: Positioned frames received again (same owner): resent, dropped by the client.
    resent_frames: int = 0
    reconnects: int = 0
    incarnations: list[int] = field(default_factory=list)
    error: str = ""
    ended_early: bool = False
    #: Per line spoken, how much of its audio the client dropped (no connection open).
    cut_ms: list[float] = field(default_factory=list)
    #: For a call that lost something: its lease and last output, read from the store.
    autopsy: list[str] = field(default_factory=list)
    watch: Watch | None = None

    @property
    def dropped(self) -> bool:
        return bool(self.error) or self.ended_early

    @property
    def lost(self) -> int:
        return max(0, self.said - self.answered)


# -- faults ------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One fault as it struck: what, when (loop time and wall clock), what it hit."""

    kind: str
    at: float
    wall: float
    target: str
    #: The calls it hit (indices), and of those the ones mid-reply at that instant.
    hit: list[int] = field(default_factory=list)
    mid: list[int] = field(default_factory=list)
    #: Per hit call, the incarnation it had heard before the fault.
    inc_before: dict[int, int] = field(default_factory=dict)
    note: str = ""
    ok: bool = True
    #: Per call hit mid-reply, the pause it heard (ms; filled in by the verdict).
    pause_ms: dict[int, float] = field(default_factory=dict)


T = TypeVar("T")


async def again(read: Callable[[], Awaitable[T]], tries: int = 3) -> T:
    """``read()``, tried again on a store error: after a Redis restart, each connection the
    client pooled before it fails once (redis-py does not retry it)."""
    for attempt in range(tries - 1):
        try:
            return await read()
        except (StoreError, RedisError):
            await asyncio.sleep(0.05 * (attempt + 1))
    return await read()


class Chaos:
    """The run's shared state: the cluster, the calls, the faults so far."""

    def __init__(self, sc: Scenario, cluster: ProcessCluster, say: Callable[[str], None]) -> None:
        self.sc = sc
        self.cluster = cluster
        self.say = say
        self.store = RedisStore(cluster.redis_url)
        self.results = [CallResult(i) for i in range(sc.calls)]
        self.faults: list[Fault] = []
        self.workers = [f"w{n + 1}" for n in range(sc.workers)]
        self.next_worker = sc.workers + 1
        self.drain_exit: int | None = None
        #: Pods stopped as the kubelet does (``--lifecycle``): name -> exit code, and how
        #: many were still running at the grace period (SIGKILLed).
        self.pod_exits: dict[str, int] = {}
        self.killed_at_grace = 0
        self.moves_refused = 0
        self.hit_workers: dict[str, str] = {}  # name -> the kind of fault that hit it
        self.t0 = 0.0
        self.wall0 = 0.0
        #: Per timed fault kind: (ms to the new owner's first write, ms of output made again).
        self.split: dict[str, list[tuple[float, float]]] = {}
        self.calls_done = asyncio.Event()
        #: What the client library logged (reconnects), "<s since the start> <message>".
        self.client_log: list[str] = []
        demo, _ = script_lines(sc.lines)
        self.expected = {normalize(d.user): normalize(d.reply or "") for d in demo}

    # -- helpers -------------------------------------------------------------------------------

    def live(self) -> list[tuple[int, Watch]]:
        """The calls in progress now."""
        return [
            (r.index, r.watch)
            for r in self.results
            if r.watch is not None and not r.watch.call.ended and not r.error
        ]

    async def owners(self) -> dict[int, str]:
        """Who owns each live call now (the store's lease)."""
        found: dict[int, str] = {}
        for index, watch in self.live():
            sid = watch.call.session
            if sid:
                with contextlib.suppress(StoreError, RedisError):
                    found[index] = (await again(partial(self.store.lease_of, sid)))[0]
        return found

    async def busiest(self, exclude: tuple[str, ...] = ()) -> tuple[str, dict[int, str]]:
        """The live worker with the most calls mid-reply (then the most calls)."""
        owners = await self.owners()
        watches = dict(self.live())

        def score(w: str) -> tuple[int, int]:
            mine = [i for i, o in owners.items() if o == w]
            return sum(watches[i].mid_reply for i in mine if i in watches), len(mine)

        skip = (*exclude, *self.hit_workers)
        candidates = [w for w in self.workers if w not in skip and self.cluster.alive(w)]
        return max(candidates, key=score), owners

    def strike(self, kind: str, target: str, hit: list[int], note: str = "") -> Fault:
        """Record the fault at this instant (call it right before the signal)."""
        watches = dict(self.live())
        fault = Fault(
            kind,
            asyncio.get_running_loop().time(),
            time.time(),
            target,
            hit=hit,
            mid=[i for i in hit if i in watches and watches[i].mid_reply],
            inc_before={i: watches[i].inc for i in hit if i in watches},
            note=note,
        )
        self.faults.append(fault)
        self.say(
            f"[{fault.at - self.t0:5.1f} s] {kind} {target}: {len(hit)} calls hit,"
            f" {len(fault.mid)} mid-reply {note}".rstrip()
        )
        return fault

    async def add_worker(self) -> str:
        name = f"w{self.next_worker}"
        self.next_worker += 1
        self.workers.append(name)
        for attempt in (1, 2):
            self.cluster.worker(name, *self.sc.worker_args, capacity=self.sc.capacity)
            try:
                await asyncio.to_thread(self.cluster.wait_ready, name)
                break
            except RuntimeError:  # exited at once (its port taken meanwhile?): once more
                if attempt == 2:
                    raise
        self.say(f"[{self.now():5.1f} s] {name} ready")
        return name

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    # -- the faults ----------------------------------------------------------------------------

    async def sigkill(self) -> None:
        target, owners = await self.busiest()
        self.hit_workers[target] = "sigkill"
        self.strike("sigkill", target, [i for i, o in owners.items() if o == target])
        self.cluster.signal(target, signal.SIGKILL)
        await asyncio.to_thread(self.cluster.wait, target, 10.0)
        await asyncio.sleep(self.sc.replace_after_s)
        await self.add_worker()

    async def sigterm(self, tg: asyncio.TaskGroup) -> None:
        target, owners = await self.busiest()
        self.hit_workers[target] = "sigterm"
        self.strike("sigterm", target, [i for i, o in owners.items() if o == target])
        self.cluster.signal(target, signal.SIGTERM)

        async def exits() -> None:
            try:
                self.drain_exit = await asyncio.to_thread(self.cluster.wait, target, 40.0)
            except Exception as exc:  # a drain that does not end is a failure, not a crash
                self.say(f"{target} did not exit after SIGTERM: {exc!r}")
                self.drain_exit = -1
            self.say(f"[{self.now():5.1f} s] {target} exited with {self.drain_exit}")

        tg.create_task(exits())
        await self.add_worker()  # a rolling update: the new pod comes up as the old one drains

    async def terminate(self, name: str, kind: str) -> None:
        """Stop pod ``name`` as the kubelet does: SIGTERM, then SIGKILL at the grace period."""
        owners = await self.owners()
        self.hit_workers[name] = kind
        self.strike(kind, name, [i for i, o in owners.items() if o == name])
        self.cluster.signal(name, signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.cluster.wait, name, self.sc.grace_s)
        except subprocess.TimeoutExpired:
            self.killed_at_grace += 1
            self.cluster.signal(name, signal.SIGKILL)
            code = await asyncio.to_thread(self.cluster.wait, name, 10.0)
        self.pod_exits[name] = code
        self.say(f"[{self.now():5.1f} s] {name} exited with {code}")

    async def rolling(self) -> None:
        """A rolling update of every worker: one new pod ready, then one old pod stopped."""
        old = [w for w in self.workers if self.cluster.alive(w) and w not in self.hit_workers]
        for name in old:
            await self.add_worker()
            await self.terminate(name, "rolling")

    async def scaledown(self) -> None:
        """The autoscaler removes one worker (the busiest: the most to hand over)."""
        target, _ = await self.busiest()
        await self.terminate(target, "scaledown")

    async def sigstop(self) -> None:
        target, owners = await self.busiest()
        self.hit_workers[target] = "sigstop"
        self.strike("sigstop", target, [i for i, o in owners.items() if o == target])
        self.cluster.signal(target, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.sc.stop_s)
        finally:
            self.cluster.signal(target, signal.SIGCONT)
        self.say(f"[{self.now():5.1f} s] {target} continued")

    async def move(self, wait_s: float = 10.0) -> None:
        # Calls early in a reply, so that the move lands mid-reply with audio still to come
        # (waiting a little for enough of them on workers no fault hit).
        deadline = self.now() + wait_s
        while True:
            owners = await self.owners()
            live = [w for w in self.workers if self.cluster.alive(w) and w not in self.hit_workers]
            watches = dict(self.live())
            early = sorted(
                (i for i, w in watches.items() if w.mid_reply and 200.0 <= w.received_ms <= 4000.0),
                key=lambda i: watches[i].received_ms,
            )
            chosen = [i for i in early if owners.get(i) in live][: self.sc.moves]
            if len(chosen) >= self.sc.moves or self.now() >= deadline:
                break
            await asyncio.sleep(0.05)
        if not chosen:
            chosen = [i for i, w in watches.items() if owners.get(i) in live][: self.sc.moves]
        targets = {i: next(w for w in live if w != owners[i]) for i in chosen if len(live) > 1}
        fault = self.strike("move", "->".join(sorted(set(targets.values()))), list(targets))
        for i, to in targets.items():
            try:
                await request_move(self.store, watches[i].call.session, to)
            except MoveRefused as exc:
                self.moves_refused += 1
                fault.ok = False
                fault.note += f" refused: {exc}"
                self.say(f"move of call {i} refused: {exc}")

    async def gateway(self) -> None:
        url = self.cluster.url("g1")
        if self.sc.gateway_after_entries or self.sc.gateway_in_reply_ms:
            await self._ripe(url)
        hit = [i for i, w in self.live() if w.gateway == url]
        self.strike("gateway", "g1", hit)
        self.cluster.signal("g1", signal.SIGKILL)
        await asyncio.to_thread(self.cluster.wait, "g1", 10.0)
        await asyncio.sleep(self.sc.gateway_down_s)
        self.cluster.gateway("g1", port=self.cluster.ports["g1"])
        await asyncio.to_thread(self.cluster.wait_ready, "g1")
        self.say(f"[{self.now():5.1f} s] g1 back")

    async def _ripe(self, url: str, timeout_s: float = 30.0) -> None:
        """Wait until every live call through ``url`` is as the scenario wants it for a kill:
        ``gateway_after_entries`` output entries stored, in a reply if asked."""
        sc = self.sc
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            watches = [w for _, w in self.live() if w.gateway == url and w.call.session]
            try:
                lengths = [
                    await again(partial(self.store.redis.xlen, keys.output(w.call.session)))
                    for w in watches
                ]
            except RedisError:
                lengths = []
            long_enough = bool(lengths) and min(lengths) >= sc.gateway_after_entries
            low, high = sc.gateway_in_reply_ms or (0.0, 0.0)
            replying = all(w.mid_reply and low <= w.received_ms <= high for w in watches)
            if long_enough and (replying or not sc.gateway_in_reply_ms):
                return
            await asyncio.sleep(0.05)
        self.say(f"[{self.now():5.1f} s] (g1's calls never got as asked: killing it anyway)")

    async def redis(self) -> None:
        server = self.cluster.redis
        assert server is not None
        self.strike("redis", "redis", [i for i, _ in self.live()])
        await asyncio.to_thread(server.restart, self.sc.redis_down_s)
        self.say(f"[{self.now():5.1f} s] redis back")

    async def schedule(self, tg: asyncio.TaskGroup) -> None:
        """Strike each kind at its time (later if the one before is not done yet)."""
        loop = asyncio.get_running_loop()
        struck = -1e9
        for n, kind in enumerate(self.sc.kinds):
            due = self.t0 + self.sc.first_fault_s + n * self.sc.spacing_s
            due = max(due, struck + self.sc.min_gap_s)
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self.calls_done.is_set():
                self.say(f"no calls left for {kind}: not struck")
                continue
            try:
                if kind == "sigterm":
                    await self.sigterm(tg)
                else:
                    await getattr(self, kind)()
            except Exception as exc:  # noted in the report; the calls go on
                self.say(f"fault {kind} failed: {exc!r}")
                if self.faults and self.faults[-1].kind == kind:
                    self.faults[-1].ok = False
                    self.faults[-1].note += f" failed: {exc!r}"
            struck = loop.time()

    async def decompose(self) -> None:
        """Split each takeover in the store's own times: until the new owner's first write,
        then until its first audio the caller had not heard (what came between is output
        the new owner made again from its checkpoint, which the gateway drops)."""
        for f in self.faults:
            if f.kind not in TIMED:
                continue
            for i in f.mid:
                sid = self.results[i].session
                start = f"{int(f.wall * 1000) - 3000}"
                try:
                    read = partial(self.store.redis.xrange, keys.output(sid), min=start, count=2000)
                    raw = await again(read)
                except RedisError:
                    continue
                before = f.inc_before.get(i, 0)
                heard: dict[tuple[int, str], int] = {}
                first_write = first_new = None
                for entry_id, fields in raw:
                    at_ms = int(entry_id.split(b"-")[0]) - f.wall * 1000
                    entry = msgspec.msgpack.decode(fields[b"o"], type=OutputEntry)
                    kind = _CODEC.decode(entry.event).kind
                    key = (entry.turn, kind)
                    if entry.token <= before:
                        heard[key] = max(heard.get(key, 0), entry.index)
                        continue
                    if first_write is None:
                        first_write = at_ms
                    if kind == "audio.out" and entry.index > heard.get(key, 0):
                        first_new = at_ms
                        break
                if first_write is not None and first_new is not None:
                    self.split.setdefault(f.kind, []).append((first_write, first_new - first_write))

    async def autopsy(self, last: int = 40) -> None:
        """For each call that lost something: its owner now and its last output in the store."""
        for r in self.results:
            if not (r.dropped or r.lost) or not r.session:
                continue
            sid = r.session
            try:
                owner, token, _ = await again(partial(self.store.lease_of, sid))
                raw = await again(partial(self.store.redis.xrevrange, keys.output(sid), count=last))
            except (StoreError, RedisError) as exc:
                r.autopsy = [f"store: {exc}"]
                continue
            tail = []
            for entry_id, fields in reversed(raw):
                entry = msgspec.msgpack.decode(fields[b"o"], type=OutputEntry)
                event = _CODEC.decode(entry.event)
                ms = int(entry_id.split(b"-")[0]) / 1000 - self.wall0
                tail.append(f"{ms:.2f}s tok={entry.token} {event.kind} turn={event.turn}")
            r.autopsy = [f"owner {owner or '-'} token {token}", *tail]

    # -- the calls -----------------------------------------------------------------------------

    async def one_call(self, index: int, lines: list[Line]) -> None:
        sc, cluster, result = self.sc, self.cluster, self.results[index]
        await asyncio.sleep(index * sc.stagger_s / max(1, sc.calls))
        first, other = ("g1", "g2") if index % 2 == 0 else ("g2", "g1")
        try:
            async with Call.connect(
                cluster.url(first),
                token=cluster.token,
                input=FMT,
                output=FMT,
                report_every_ms=sc.report_every_ms,
                reconnect_attempts=12,
                fallback_urls=[cluster.url(other)],
            ) as call:
                result.session = call.session
                result.watch = Watch(call, self.expected)
                caller = MicCaller(call, lines, frame_ms=sc.frame_ms, max_wait_s=sc.max_wait_s)
                try:
                    await caller.play()
                finally:
                    result.said = len(caller.spoken)
                    result.cut_ms = caller.cut_ms()
                result.ended_early = call.ended
        except Exception as exc:  # a call that could not go on: counted, not raised
            result.error = f"{type(exc).__name__}: {exc}"
        watch = result.watch
        if watch is not None:  # judged from what it heard, however it ended
            verdict = judge(watch.call, said=result.said)
            result.answered = verdict.answered
            result.doubled = verdict.doubled
            result.stale_frames = verdict.stale_frames
            result.resent_frames = watch.call.protocol.duplicates - verdict.stale_frames
            result.reconnects = watch.call.reconnects
            result.incarnations = sorted(watch.first_audio)


# -- measuring the machine ---------------------------------------------------------------------


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    return sum(parts) - idle, sum(parts)


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


class Machine:
    """The machine's busy share (per second), CPU per role, and this process's loop lag."""

    def __init__(self, cluster: ProcessCluster | None = None) -> None:
        self.cluster = cluster
        self.busy: list[float] = []
        self.lag_ms: list[float] = []
        #: CPU seconds per process (role name; "client": this process), last seen.
        self.cpu_s: dict[str, float] = {}
        self._start = _cpu_times()
        self._own_start = time.process_time()
        self._base: dict[int, float] = {}

    def _sample(self) -> None:
        cluster = self.cluster
        if cluster is None:
            return
        procs = {name: p.pid for name, p in cluster.procs.items()}
        if cluster.redis is not None and cluster.redis.proc is not None:
            procs["redis"] = cluster.redis.proc.pid
        for name, pid in procs.items():
            used = _proc_cpu_s(pid)
            if used is None:
                continue
            # A process there from the start counts from now; a later one, its whole life.
            base = self._base.setdefault(pid, used if not self.cpu_s else 0.0)
            key = name.rstrip("0123456789") or name
            # (a role restarted under the same name, e.g. g1 or redis, adds up)
            self.cpu_s[f"{key}:{pid}"] = used - base
        self.cpu_s["client"] = time.process_time() - self._own_start

    def cpu_by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for key, used in self.cpu_s.items():
            role = key.split(":")[0]
            roles[role] = round(roles.get(role, 0.0) + used, 1)
        return roles

    async def watch_cpu(self) -> None:
        last = _cpu_times()
        self._sample()
        while True:
            await asyncio.sleep(1.0)
            now = _cpu_times()
            if now[1] > last[1]:
                self.busy.append((now[0] - last[0]) / (now[1] - last[1]))
            last = now
            self._sample()

    async def watch_loop(self, every_s: float = 0.01) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + every_s
            await asyncio.sleep(every_s)
            self.lag_ms.append(max(0.0, (loop.time() - due) * 1000))

    def overall_busy(self) -> float:
        now = _cpu_times()
        return (now[0] - self._start[0]) / max(1.0, now[1] - self._start[1])


# -- the verdict -------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50), 1),
        "p95": round(percentile(values, 0.95), 1),
        "max": round(max(values), 1),
    }


def _attributed(chaos: Chaos) -> tuple[dict[str, dict[str, Any]], list[float]]:
    """Per fault kind: the pauses and takeovers of the calls it hit; and the unexplained gaps."""
    faults = sorted(chaos.faults, key=lambda f: f.at)
    windows: list[tuple[Fault, float]] = []
    for n, f in enumerate(faults):
        until = faults[n + 1].at if n + 1 < len(faults) else f.at + 5.0
        windows.append((f, min(until, f.at + 5.0)))
    explained: set[tuple[int, int]] = set()  # (call, gap number) inside some fault's window
    per: dict[str, dict[str, Any]] = {}
    for f, until in windows:
        pauses: list[float] = []
        takeovers: list[float] = []
        for i in f.mid:
            watch = chaos.results[i].watch
            if watch is None:
                continue
            mine = [
                (n, g) for n, g in enumerate(watch.gaps) if g.end > f.at - 0.1 and g.start < until
            ]
            explained.update((i, n) for n, _ in mine)
            pauses.append(max((g.ms for _, g in mine), default=0.0))
            f.pause_ms[i] = round(pauses[-1], 1)
            if f.kind in TIMED:
                before = f.inc_before.get(i, 0)
                newer = [t for inc, t in watch.first_audio.items() if inc > before and t >= f.at]
                if newer:
                    takeovers.append((min(newer) - f.at) * 1000)
        # Calls hit that were not mid-reply hear no pause inside a reply; their gaps (if a
        # reply started meanwhile) are the fault's too, not noise.
        for i in set(f.hit) - set(f.mid):
            watch = chaos.results[i].watch
            if watch is not None:
                explained.update(
                    (i, n)
                    for n, g in enumerate(watch.gaps)
                    if g.end > f.at - 0.1 and g.start < until
                )
        stale = sum(
            n
            for r in chaos.results
            if r.watch is not None
            for t, n in r.watch.stale_at
            if f.at <= t < until
        )
        doubled = sum(
            1
            for r in chaos.results
            if r.watch is not None
            for t in r.watch.doubled_at.values()
            if f.at <= t < until
        )
        per.setdefault(
            f.kind,
            {"faults": 0, "hit": 0, "mid_reply": 0, "pauses": [], "tk": [], "stale": 0, "dbl": 0},
        )
        entry = per[f.kind]
        entry["faults"] += 1
        entry["hit"] += len(f.hit)
        entry["mid_reply"] += len(f.mid)
        entry["pauses"] += pauses
        entry["tk"] += takeovers
        entry["stale"] += stale
        entry["dbl"] += doubled
    noise = [
        g.ms
        for r in chaos.results
        if r.watch is not None
        for n, g in enumerate(r.watch.gaps)
        if (r.index, n) not in explained
    ]
    out = {
        kind: {
            "faults": e["faults"],
            **_split(chaos.split.get(kind, [])),
            "calls_hit": e["hit"],
            "mid_reply": e["mid_reply"],
            "pause_ms": _stats(e["pauses"]),
            "takeover_ms": _stats(e["tk"]),
            "stale_frames": e["stale"],
            "replies_doubled": e["dbl"],
        }
        for kind, e in per.items()
    }
    return out, noise


def _reply_span(watch: Watch, turn: int) -> tuple[float, float]:
    """When reply ``turn`` began and ended playing at the client (loop time)."""
    record = watch.call.record.turns.get(turn)
    start = record.started_at if record is not None and record.started_at is not None else 0.0
    return start, watch.last_played.get(turn, start)


def _replies(watch: Watch, t0: float) -> list[dict[str, Any]]:
    """Each reply of a call as its client saw it (for a call with a loss)."""
    out = []
    for r in watch.call.record.replies:
        start, end = _reply_span(watch, r.turn)
        out.append(
            {
                "turn": r.turn,
                "user": r.user,
                "ended": r.ended,
                "interrupted": r.interrupted,
                "span_s": [round(start - t0, 2), round(end - t0, 2)],
                "received_ms": round(r.received_ms),
                "played_ms": round(r.played_ms),
                "heard_chars": len(r.heard),
                "reply_chars": len(r.reply),
            }
        )
    kinds = [(round(t - t0, 2), n) for t, n in watch.stale_at]
    return out + ([{"stale_at_s": kinds}] if kinds else [])


def details(chaos: Chaos) -> dict[str, Any]:
    """What each fault hit and what each call with a loss heard (for ``--out``)."""
    t0 = chaos.t0
    calls = []
    for r in chaos.results:
        if not (r.dropped or r.lost or r.doubled or r.stale_frames or r.resent_frames):
            continue
        w = r.watch
        calls.append(
            {
                "call": r.index,
                "session": r.session,
                "error": r.error,
                "ended_early": r.ended_early,
                "said": r.said,
                "answered": r.answered,
                "stale_frames": r.stale_frames,
                "resent_frames": r.resent_frames,
                "cut_ms": r.cut_ms,
                "disconnects": []
                if w is None
                else [(round(t - t0, 2), code, why) for t, code, why in w.disconnects],
                "stale_at_s": [] if w is None else [(round(t - t0, 2), n) for t, n in w.stale_at],
                "doubled": [
                    {
                        "turn": turn,
                        "span_s": None
                        if w is None
                        else [round(x - t0, 2) for x in _reply_span(w, turn)],
                        "heard": heard,
                        "text": text,
                    }
                    for turn, heard, text in r.doubled
                ],
                "hit_by": [f"{f.kind}@{f.at - t0:.1f}s" for f in chaos.faults if r.index in f.hit],
                "incarnations": r.incarnations,
                "reconnects": r.reconnects,
                "replies": [] if w is None else _replies(w, t0),
                "autopsy": r.autopsy,
            }
        )
    faults = [
        {
            "kind": f.kind,
            "at_s": round(f.at - t0, 2),
            "target": f.target,
            "hit": f.hit,
            "mid": f.mid,
            "pause_ms_by_call": f.pause_ms,
            "note": f.note.strip(),
        }
        for f in chaos.faults
    ]
    return {"faults": faults, "calls_with_losses": calls, "client_log": chaos.client_log[:200]}


def _split(found: list[tuple[float, float]]) -> dict[str, Any]:
    if not found:
        return {}
    return {
        "first_write_ms": _stats([w for w, _ in found]),
        "made_again_ms": _stats([r for _, r in found]),
    }


_FAILOVER = re.compile(r"dispatcher \S+: (\w+) lost its owner (\S+)")
_LOST = re.compile(r"worker (\S+): lease of (\w+) lost|session (\w+): fenced")


def _logs(chaos: Chaos) -> dict[str, Any]:
    """Failovers and lost leases, from the roles' logs: are they all explained by a fault?"""
    cluster = chaos.cluster
    failovers = [
        m.groups()
        for name in cluster.procs
        if name.startswith("d")
        for m in _FAILOVER.finditer(cluster.log(name))
    ]
    lost: dict[str, int] = {}
    for name in cluster.procs:
        if name.startswith("w"):
            n = len(_LOST.findall(cluster.log(name)))
            if n:
                lost[name] = n
    hit = {w for w, kind in chaos.hit_workers.items() if kind in ("sigkill", "sigstop")}
    return {
        "failovers": len(failovers),
        "failovers_unexplained": sum(owner not in hit for _, owner in failovers),
        "leases_lost_logged": lost,
        "leases_lost_unexplained": sum(n for w, n in lost.items() if w not in hit),
    }


def _unexplained_incarnations(chaos: Chaos) -> int:
    """New incarnations heard by calls that no owner-changing fault hit at the time."""
    changes: dict[int, int] = {}
    for f in chaos.faults:
        if f.kind in OWNER_CHANGES:
            for i in f.hit:
                changes[i] = changes.get(i, 0) + 1
    extra = 0
    for r in chaos.results:
        # The first incarnation is the call's placement; each later one needs a fault.
        extra += max(0, len(r.incarnations) - 1 - changes.get(r.index, 0))
    return extra


def summary(chaos: Chaos, machine: Machine | None, wall_s: float) -> dict[str, Any]:
    """Everything the run came to, as the final JSON line says it."""
    results = chaos.results
    per, noise = _attributed(chaos)
    kill = per.get("sigkill", {})
    move = per.get("move", {})
    logs = _logs(chaos)
    out: dict[str, Any] = {
        "benchmark": "chaos",
        "calls": len(results),
        "workers": chaos.sc.workers,
        "faults": {
            "count": len(chaos.faults),
            **{k: sum(f.kind == k for f in chaos.faults) for k in chaos.sc.kinds},
        },
        "faults_failed": [f"{f.kind}: {f.note.strip()}" for f in chaos.faults if not f.ok],
        "calls_dropped": sum(r.dropped for r in results),
        "utterances_lost": sum(r.lost for r in results),
        "replies_doubled": sum(len(r.doubled) for r in results),
        "stale_owner_frames": sum(r.stale_frames for r in results),
        "resent_frames": sum(r.resent_frames for r in results),
        "utterances_cut_by_disconnect": sum(sum(c > 0 for c in r.cut_ms) for r in results),
        "pause_ms_p50": kill.get("pause_ms", {}).get("p50"),
        "pause_ms_p95": kill.get("pause_ms", {}).get("p95"),
        "pause_ms_max": kill.get("pause_ms", {}).get("max"),
        "migration_pause_ms_p50": move.get("pause_ms", {}).get("p50"),
        "migration_pause_ms_max": move.get("pause_ms", {}).get("max"),
        "takeover_ms_p50": kill.get("takeover_ms", {}).get("p50"),
        "takeover_ms_p95": kill.get("takeover_ms", {}).get("p95"),
        "takeover_ms_max": kill.get("takeover_ms", {}).get("max"),
        "per_fault": per,
        "drain_exit_code": chaos.drain_exit,
        "pod_exit_codes": dict(sorted(chaos.pod_exits.items())),
        "pods_killed_at_grace": chaos.killed_at_grace,
        "moves_refused": chaos.moves_refused,
        "reconnects": sum(r.reconnects for r in results),
        "unexplained_incarnations": _unexplained_incarnations(chaos),
        **logs,
        "noise_gaps_over_100ms": sum(g > NOISE_MS for g in noise),
        "noise_gap_ms_max": round(max(noise, default=0.0), 1),
    }
    if machine is not None:
        lag = machine.lag_ms
        out["client_loop_lag_ms"] = {
            "p50": round(percentile(lag, 0.5), 1) if lag else None,
            "p99": round(percentile(lag, 0.99), 1) if lag else None,
            "max": round(max(lag), 1) if lag else None,
        }
        out["cpu_busy"] = round(machine.overall_busy(), 3)
        out["cpu_busy_max_1s"] = round(max(machine.busy, default=0.0), 3)
        machine._sample()
        out["cpu_s_by_role"] = machine.cpu_by_role()
    targets = {
        "zero_losses": all(
            out[k] == 0
            for k in ("calls_dropped", "utterances_lost", "replies_doubled", "stale_owner_frames")
        ),
    }
    kinds = chaos.sc.kinds
    if "sigkill" in kinds:
        targets["kill_pause_p95_le_1000"] = _le(out["pause_ms_p95"], 1000.0)
        targets["kill_pause_max_le_2000"] = _le(out["pause_ms_max"], 2000.0)
    if "move" in kinds:
        targets["migration_pause_max_le_150"] = _le(out["migration_pause_ms_max"], 150.0)
    if any(k in kinds for k in LIFECYCLE):  # every pod drained in its grace period, exit 0
        targets["pods_drained_in_grace"] = not chaos.killed_at_grace and all(
            code == 0 for code in chaos.pod_exits.values()
        )
    out["targets"] = targets
    out["targets_met"] = all(targets.values())
    out["errors"] = sorted({r.error for r in results if r.error})[:5]
    out["wall_s"] = round(wall_s, 1)
    out["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )
    out["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


# -- running it --------------------------------------------------------------------------------


def script_lines(n: int) -> tuple[list[DemoLine], list[Line]]:
    """The first ``n`` lines of the script: what the fakes are told, and what the callers say."""
    demo = SCRIPT[:n]
    return demo, [Line(d.user, speech_like(900.0, 16000, seed=k), None) for k, d in enumerate(demo)]


@contextlib.contextmanager
def chaos_cluster(sc: Scenario, log_dir: Path | None = None) -> Iterator[ProcessCluster]:
    """The cluster of a run, ready: 2 dispatchers, the workers, g1 and g2 (stopped after)."""
    demo, _ = script_lines(sc.lines)
    spec_dir = Path(tempfile.mkdtemp(prefix="rspp-chaos-"))
    spec = spec_dir / "chaos.yaml"
    spec.write_bytes(msgspec.yaml.encode(demo_pipeline(demo).spec))
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)  # (ProcessCluster does not make it)
    names = [f"w{n + 1}" for n in range(sc.workers)]
    try:
        for attempt in (1, 2):
            cluster = ProcessCluster([str(spec), "--lead-ms", "60"], log_dir=log_dir).start()
            try:
                cluster.dispatcher("d1")
                cluster.dispatcher("d2")
                for name in names:
                    cluster.worker(name, *sc.worker_args, capacity=sc.capacity)
                cluster.gateway("g1")
                cluster.gateway("g2")
                cluster.wait_ready(*names, "g1", "g2", timeout_s=120)
            except RuntimeError:
                # A role that exited at once: most likely its port, free when ProcessCluster
                # chose it, was taken meanwhile by another process of this machine. Once more.
                cluster.stop()
                if attempt == 2:
                    raise
                continue
            except BaseException:  # (a timeout, ^C: nothing is left running)
                cluster.stop()
                raise
            try:
                yield cluster
            finally:
                cluster.stop()
            return
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)


async def run_chaos(
    sc: Scenario, cluster: ProcessCluster, say: Callable[[str], None] = print
) -> tuple[Chaos, Machine]:
    """The calls and the faults, on a ready cluster (:func:`chaos_cluster`)."""
    _, lines = script_lines(sc.lines)
    chaos = Chaos(sc, cluster, say)
    machine = Machine(cluster)
    loop = asyncio.get_running_loop()
    chaos.t0 = loop.time()
    chaos.wall0 = time.time()
    handler = _Collect(chaos)
    client_log = logging.getLogger("rspp.client")
    client_log.addHandler(handler)
    level = client_log.level
    client_log.setLevel(logging.INFO)
    try:
        async with asyncio.TaskGroup() as tg:
            watchers = [tg.create_task(machine.watch_cpu()), tg.create_task(machine.watch_loop())]
            scheduler = tg.create_task(chaos.schedule(tg))
            calls = [tg.create_task(chaos.one_call(i, lines)) for i in range(sc.calls)]
            await asyncio.gather(*calls)
            chaos.calls_done.set()
            await scheduler
            for task in watchers:
                task.cancel()
        await chaos.autopsy()
        await chaos.decompose()
    finally:
        client_log.removeHandler(handler)
        client_log.setLevel(level)
        with contextlib.suppress(Exception):
            await chaos.store.close()
    return chaos, machine


@dataclass
class Run:
    """A whole scenario played (:func:`play`): the run, its summary and details, and a
    story of it to print beside a failed assertion."""

    run: Chaos
    out: dict[str, Any]
    found: dict[str, Any]
    story: str


def play(sc: Scenario, log_dir: Path, timeout_s: float) -> Run:
    """Start the cluster, run the scenario on it within ``timeout_s``, stop it (the tests)."""
    lines: list[str] = []
    with chaos_cluster(sc, log_dir) as cluster:
        running = run_chaos(sc, cluster, lines.append)
        run, machine = asyncio.run(asyncio.wait_for(running, timeout_s))
        out = summary(run, machine, 0.0)
        found = details(run)
    return Run(run, out, found, "\n".join(lines) + f"\n{out}\n{found}")


class _Collect(logging.Handler):
    """Keeps what the client library logs (its reconnects), timed from the run's start."""

    def __init__(self, chaos: Chaos) -> None:
        super().__init__(logging.INFO)
        self.chaos = chaos

    def emit(self, record: logging.LogRecord) -> None:
        self.chaos.client_log.append(
            f"{record.created - self.chaos.wall0:.2f}s {record.getMessage()}"
        )


def _print_summary(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(130, Console().width))
    table = Table(title=f"chaos: {out['calls']} calls, {out['faults']['count']} faults")
    columns = ["fault", "hit", "mid-reply", "pause p50", "p95", "max", "takeover p50", "p95"]
    columns += ["1st write p50", "made again p50", "stale", "doubled"]
    for column in columns:
        table.add_column(column, justify="left" if column == "fault" else "right")
    for kind, e in out["per_fault"].items():
        p, t = e["pause_ms"], e["takeover_ms"]
        table.add_row(
            kind,
            str(e["calls_hit"]),
            str(e["mid_reply"]),
            *(_ms(p[k]) for k in ("p50", "p95", "max")),
            _ms(t["p50"]),
            _ms(t["p95"]),
            _ms(e.get("first_write_ms", {}).get("p50")),
            _ms(e.get("made_again_ms", {}).get("p50")),
            str(e["stale_frames"]),
            str(e["replies_doubled"]),
        )
    console.print(table)
    losses = Table(title="counted at the clients (target: all zero)")
    counts = ("calls_dropped", "utterances_lost", "replies_doubled", "stale_owner_frames")
    for column in ("calls dropped", "utterances lost", "replies doubled", "stale frames"):
        losses.add_column(column, justify="right")
    losses.add_column("(resent frames)", justify="right")
    losses.add_row(*(str(out[k]) for k in counts), str(out["resent_frames"]))
    console.print(losses)
    lag = out.get("client_loop_lag_ms", {})
    console.print(
        f"machine: cpu busy {out.get('cpu_busy', 0):.0%}"
        f" (max 1 s: {out.get('cpu_busy_max_1s', 0):.0%}),"
        f" client loop lag p50/p99/max {lag.get('p50')}/{lag.get('p99')}/{lag.get('max')} ms;"
        f" gaps no fault explains > {NOISE_MS:.0f} ms: {out['noise_gaps_over_100ms']}"
        f" (max {out['noise_gap_ms_max']} ms); failovers {out['failovers']}"
        f" (unexplained {out['failovers_unexplained']}), lost leases unexplained"
        f" {out['leases_lost_unexplained']}, new incarnations unexplained"
        f" {out['unexplained_incarnations']}; drain exit {out['drain_exit_code']};"
        f" pods stopped {out['pod_exit_codes']} (SIGKILLed at the grace period:"
        f" {out['pods_killed_at_grace']})"
    )
    console.print(
        "targets: "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in out["targets"].items())
    )
    if out["errors"]:
        console.print(f"errors: {out['errors']}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="concurrent calls (default 50)")
    parser.add_argument("--workers", type=int, default=3, help="workers at the start (>= 3)")
    parser.add_argument("--quick", action="store_true", help="a small run: 8 calls")
    parser.add_argument(
        "--lifecycle",
        action="store_true",
        help="what Kubernetes does to worker pods instead: a rolling update, then a scale-down",
    )
    parser.add_argument(
        "--grace-s", type=float, default=20.0, help="a pod's grace period (SIGTERM to SIGKILL)"
    )
    parser.add_argument("--frame-ms", type=float, default=20.0, help="caller frames (ms)")
    parser.add_argument("--out", type=Path, help="also write the final JSON here")
    parser.add_argument("--log-dir", type=Path, help="the roles' logs (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.workers < 3:
        parser.error("--workers must be at least 3 (one is killed, one drained, one paused)")
    calls = 8 if args.quick and args.calls == 50 else args.calls
    sc = Scenario(
        calls=calls,
        workers=args.workers,
        moves=min(5, max(1, calls // 8)),
        frame_ms=args.frame_ms,
        grace_s=args.grace_s,
    )
    if args.lifecycle:
        sc = dataclasses.replace(sc, kinds=LIFECYCLE, spacing_s=1.0, min_gap_s=0.0)

    started = time.monotonic()
    with chaos_cluster(sc, args.log_dir) as cluster:
        print(
            f"cluster up in {time.monotonic() - started:.1f} s (logs in {cluster.log_dir});"
            f" {sc.calls} calls, faults from {sc.first_fault_s:.0f} s every {sc.spacing_s:.0f} s",
            flush=True,
        )
        began = time.monotonic()
        chaos, machine = asyncio.run(run_chaos(sc, cluster, lambda s: print(s, flush=True)))
        out = summary(chaos, machine, time.monotonic() - began)
        extra = details(chaos)
    out["wall_s_total"] = round(time.monotonic() - started, 1)
    _print_summary(out)
    line = json.dumps(out, separators=(",", ":"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**out, "details": extra}, indent=2) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
