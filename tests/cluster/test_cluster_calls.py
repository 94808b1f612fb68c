"""Calls through a cluster in one process: placed, answered, moved, failed over, drained.

The caller is the Python client (a real WebSocket to the gateway); the
pipeline is the fake demo one (real VAD and turn manager, scripted models).
What is checked is what the client received and played: every utterance
answered, every reply whole and heard once, nothing from a replaced owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from rspp.client import Call, Caller, CallRefused, Line
from rspp.cluster import MemoryStore, WorkerInfo
from rspp.cluster.dispatcher import MoveRefused, request_move, request_swap
from rspp.demo import DemoLine
from rspp.testing.audio import speech_like
from rspp.testing.listening import Hearing, until_heard
from rspp.transports.call.wire import AudioFormat

from .inprocess import TOKEN, Cluster, cluster

FMT = AudioFormat(sample_rate=16000)
HELLO = DemoLine("Hello there, how are you?", "Fine, thanks, and you?")
LONG = DemoLine(
    "Tell me about the weather.",
    "Tomorrow it will be mild and mostly cloudy, around fourteen degrees, with a chance "
    "of light rain in the late afternoon, so take an umbrella with you when you go out. "
    "The weekend looks sunny and warmer, close to twenty degrees on Sunday.",
)
BYE = DemoLine("Thanks, goodbye.", "Goodbye!")
SCRIPT = [HELLO, LONG, BYE]


def line(demo: DemoLine, seed: int) -> Line:
    return Line(demo.user, speech_like(900.0, 16000, seed=seed), demo.barge_in_after_ms)


def run(body: Callable[[], Awaitable[None]], timeout_s: float = 40.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout_s))  # type: ignore[arg-type]


def replies_heard_once(call: Call, script: list[DemoLine]) -> None:
    """Every line answered in order, each reply heard whole and exactly once."""
    replies = [r for r in call.record.replies if not r.interrupted]
    assert [r.user for r in replies] == [d.user for d in script]
    assert [r.heard.strip() for r in replies] == [d.reply for d in script]


async def mid_reply(call: Call, nth: int, heard_ms: float = 300.0) -> None:
    await until_heard(call, nth, heard_ms, timeout_s=20.0)


def test_a_call_through_the_cluster_is_answered() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            await Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            replies_heard_once(call, SCRIPT)
            owner = c.owner_of(call.session)
            assert owner.sessions[call.session].lease.token == 1

    run(body)


def test_a_session_moved_mid_reply_carries_on_from_what_was_heard() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            hearing = Hearing(call)
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 2)
            source = c.owner_of(call.session)
            target = next(name for name in c.workers if name != source.id)
            assert await request_move(c.store, call.session, to=target) == source.id
            await caller
            replies_heard_once(call, SCRIPT)
            owner = c.owner_of(call.session)
            assert owner.id == target and owner.sessions[call.session].lease.token == 2
            moved_turn = call.record.replies[1].turn
            assert hearing.longest_gap(moved_turn) < 500.0  # a move is a short pause
            assert owner.metrics.takeovers.labels("move")._value.get() == 1

    run(body)


def test_a_crashed_worker_s_call_is_taken_over_and_nothing_is_heard_twice() -> None:
    """And at once: its presence ended with it, so no 20 s lease TTL is waited for."""

    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT, workers=2, worker_config={"lease_ttl_ms": 20_000}) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 2, heard_ms=700.0)  # well after the reply's checkpoint
            dead = c.owner_of(call.session)
            await c.crash(dead.id)
            (survivor,) = [w for w in c.workers.values() if w.id != dead.id]
            for _ in range(300):
                if call.session in survivor.sessions:
                    break
                await asyncio.sleep(0.01)
            assert call.session in survivor.sessions, "not taken over within 3 s"
            await caller
            replies_heard_once(call, SCRIPT)
            assert survivor.sessions[call.session].lease.token == 2
            assert c.host.metrics.duplicates._value.get() > 0  # the new owner repeated some

    run(body)


def test_a_draining_worker_hands_its_calls_over_and_stops() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT, workers=2) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 1, heard_ms=100.0)
            draining = c.owner_of(call.session)
            draining.drain()
            await asyncio.wait_for(c.tasks[draining.id], 15.0)  # it exits once empty
            await caller
            replies_heard_once(call, SCRIPT)
            (other,) = [w for w in c.workers.values() if w.id != draining.id]
            assert call.session in other.sessions
            assert draining.metrics.migrations.labels("drain")._value.get() == 1

    run(body)


UPGRADED = [
    HELLO,
    DemoLine(LONG.user, "The upgraded model says: mild tomorrow, rain later."),
    DemoLine(BYE.user, "Goodbye from the upgraded model!"),
]


def test_a_live_session_swaps_pipeline_at_a_turn_boundary_with_its_conversation() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT, more={"demo-v2": UPGRADED}) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 1, heard_ms=100.0)  # ask while the first reply plays
            owner = c.owner_of(call.session)
            assert await request_swap(c.store, call.session, pipeline="demo-v2") == owner.id
            await caller
            # Replies after the swap come from the new pipeline; the first was not cut.
            replies_heard_once(call, [HELLO, UPGRADED[1], UPGRADED[2]])
            owned = c.owner_of(call.session).sessions[call.session]
            assert owned.pipeline.name == "demo-v2"
            history = [(m.role, m.text) for m in owned.port.session.conversation.history()]
            assert history[:2] == [("user", HELLO.user), ("assistant", HELLO.reply)]

    run(body)


def test_the_llm_of_a_live_session_is_reconfigured_at_a_turn_boundary() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 1, heard_ms=100.0)
            replies = {d.user: d.reply for d in UPGRADED}
            await request_swap(c.store, call.session, config={"llm": {"replies": replies}})
            await caller
            replies_heard_once(call, UPGRADED)
            owned = c.owner_of(call.session).sessions[call.session]
            assert owned.pipeline.spec.version == 3  # demo.toml is version 2; derived: +1
            assert owned.spec is not None

    run(body)


def test_a_move_to_a_worker_that_cannot_read_the_checkpoint_is_refused() -> None:
    async def body() -> None:
        async with (
            cluster(MemoryStore(), SCRIPT, configs={"w2": {"compatibility": "1.1"}}) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 1, heard_ms=100.0)
            owner = c.owner_of(call.session)
            if owner.id == "w2":  # placed on the old one: move it to the new one instead
                await request_move(c.store, call.session, to="w1")
            else:
                with pytest.raises(MoveRefused, match="stays on w1"):
                    await request_move(c.store, call.session, to="w2")
            await caller
            replies_heard_once(call, SCRIPT)
            assert c.owner_of(call.session).id == "w1"

    run(body)


def test_a_draining_worker_keeps_a_call_that_no_live_worker_can_read() -> None:
    async def body() -> None:
        async with (
            cluster(
                MemoryStore(), SCRIPT, workers=3, configs={"w2": {"compatibility": "1.1"}}
            ) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            await c.crash("w3")  # one new worker is not there yet
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(SCRIPT)]).play()
            )
            await mid_reply(call, 1, heard_ms=100.0)
            if c.owner_of(call.session).id == "w2":  # the placement is random
                await request_move(c.store, call.session, to="w1")  # newer reads older
                await asyncio.sleep(0.5)
            owner = c.owner_of(call.session)
            assert owner.id == "w1"
            owner.drain()
            await asyncio.sleep(1.0)
            assert c.owner_of(call.session).id == "w1"  # kept: w2 cannot read it
            await caller
            replies_heard_once(call, SCRIPT)

    run(body)


def test_a_full_cluster_refuses_a_call_cleanly_and_takes_it_when_room_comes() -> None:
    async def body() -> None:
        async with cluster(
            MemoryStore(), SCRIPT, workers=1, worker_config={"capacity": 1}, dispatchers=2
        ) as c:
            async with Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as first:
                await asyncio.sleep(0.3)  # its worker's beat says it is full
                with pytest.raises(CallRefused) as refused:
                    async with Call.connect(c.url, token=TOKEN, input=FMT, output=FMT):
                        pass
                assert refused.value.code == 4503 and "full" in str(refused.value)
                assert first.connected  # the call in progress is untouched
            await asyncio.sleep(0.5)  # the first call ended: room again
            async with Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as again:
                assert again.connected

    run(body)


def test_a_call_placed_on_a_worker_that_died_before_taking_it_is_placed_again() -> None:
    async def body() -> None:
        store = MemoryStore()
        async with cluster(store, SCRIPT, workers=1, worker_config={"capacity": 1}) as c:
            async with Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as first:
                await asyncio.sleep(0.4)  # w1's beat says it is full
                # A worker that beat once, then died: the only one with room.
                await store.heartbeat(WorkerInfo(id="ghost", pipelines=["demo"], capacity=9))
                second = asyncio.create_task(_connect_and_say_who(c))
                await asyncio.sleep(0.5)  # placed on the ghost; nothing takes it
                assert first.connected
            # The first call ended: w1 has room; the gateway asks again and w1 takes it.
            assert await second == "w1"

    run(body)


async def _connect_and_say_who(c: Cluster) -> str:
    async with Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call:
        return c.owner_of(call.session).id


@pytest.mark.parametrize("after_s", [0.6, 0.8])
def test_a_move_while_a_speculation_is_held_loses_no_reply(after_s: float) -> None:
    """Moved just after the caller's line ends: the turn has started, a speculation on the
    partial is held, the final is pending in the ASR. Every line must still be answered,
    once, whole. (The new owner's port did not know the speculation was held:
    its discarded ``turn.interrupted`` reached the caller, who took it for the reply.)"""
    script = [HELLO, BYE]

    async def body() -> None:
        async with (
            cluster(MemoryStore(), script, workers=2) as c,
            Call.connect(c.url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            caller = asyncio.create_task(
                Caller(call, [line(d, n) for n, d in enumerate(script)]).play()
            )
            await asyncio.sleep(0.9 + after_s)  # the line (0.9 s), then a little
            owner = c.owner_of(call.session)
            other = next(w for w in c.workers if w != owner.id)
            await request_move(c.store, call.session, other)
            await caller
            replies_heard_once(call, script)

    run(body)
