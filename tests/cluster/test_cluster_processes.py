"""The failure scenarios on real processes: a private Redis, dispatchers, workers, gateways.

Each role is its own ``rspp`` subprocess (:class:`~rspp.cluster.local.ProcessCluster`);
faults are real signals -- SIGKILL, SIGSTOP past the lease TTL, SIGTERM -- and
a real Redis restart. The caller is the Python client, judged from what it
received and played (:func:`rspp.testing.listening.judge`): every utterance
answered, no reply heard twice, nothing from a replaced owner.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from rspp.client import Call, Caller, Line
from rspp.cluster.local import ProcessCluster
from rspp.cluster.redis_store import RedisStore
from rspp.demo import DemoLine, demo_pipeline
from rspp.testing.audio import speech_like
from rspp.testing.listening import Hearing, judge, until_heard
from rspp.transports.call.wire import AudioFormat

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

FMT = AudioFormat(sample_rate=16000)
SCRIPT = [
    DemoLine("Hello there, how are you?", "Fine, thanks, and you?"),
    DemoLine(
        "Tell me about the weather.",
        "Tomorrow it will be mild and mostly cloudy, around fourteen degrees, with a chance "
        "of light rain in the late afternoon, so take an umbrella with you when you go out. "
        "The weekend looks sunny and warmer, close to twenty degrees on Sunday.",
    ),
    DemoLine("Thanks, goodbye.", "Goodbye, and have a nice day!"),
]
LINES = [Line(d.user, speech_like(900.0, 16000, seed=n), None) for n, d in enumerate(SCRIPT)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    spec = tmp_path_factory.mktemp("spec") / "demo.yaml"
    spec.write_bytes(msgspec.yaml.encode(demo_pipeline(SCRIPT).spec))
    with ProcessCluster([str(spec), "--lead-ms", "60"]) as c:
        c.dispatcher("d1")
        c.dispatcher("d2")
        for name in ("w1", "w2", "w3"):
            c.worker(name)
        c.gateway("g1")
        c.gateway("g2")
        c.wait_ready("w1", "w2", "w3", "g1", "g2")
        yield c


def run(body: Callable[[], Awaitable[None]], timeout_s: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout_s))  # type: ignore[arg-type]


async def owner(c: ProcessCluster, sid: str) -> tuple[str, int]:
    store = RedisStore(c.redis_url)
    try:
        name, token, _ = await store.lease_of(sid)
        return name, token
    finally:
        await store.close()


async def a_call_with_a_fault(
    c: ProcessCluster,
    fault: Callable[[str, str], Awaitable[None]],
    *,
    heard_ms: float = 700.0,
    gateway: str = "g1",
) -> tuple[Call, Hearing, str, int]:
    """A three-line call; ``fault(session, owner)`` strikes mid-way through the long reply."""
    others = [c.url(g) for g in ("g1", "g2") if g != gateway]
    async with Call.connect(
        c.url(gateway),
        token=c.token,
        input=FMT,
        output=FMT,
        reconnect_attempts=8,
        fallback_urls=others,
    ) as call:
        hearing = Hearing(call)
        caller = asyncio.create_task(Caller(call, LINES).play())
        await until_heard(call, 2, heard_ms)
        before, token = await owner(c, call.session)
        await fault(call.session, before)
        await caller
        _, after = await owner(c, call.session)
    return call, hearing, before, after - token


def assert_heard_once(call: Call, hearing: Hearing) -> None:
    verdict = judge(call, said=len(LINES), hearing=hearing)
    assert verdict.lost == 0, [r.to_json() for r in call.record.replies]
    assert verdict.doubled == []
    assert verdict.stale_frames == 0


def test_a_worker_killed_mid_reply_the_call_goes_on_from_where_it_was(
    cluster: ProcessCluster,
) -> None:
    async def kill(sid: str, name: str) -> None:
        cluster.signal(name, signal.SIGKILL)

    async def body() -> None:
        call, hearing, dead, takeovers = await a_call_with_a_fault(cluster, kill)
        assert takeovers == 1
        assert_heard_once(call, hearing)
        assert hearing.longest_gap() < 3000.0  # detection (lease TTL) + takeover
        cluster.worker(dead)  # back to three workers
        cluster.wait_ready(dead)

    run(body)


def test_a_paused_worker_that_wakes_after_a_takeover_is_never_heard(
    cluster: ProcessCluster,
) -> None:
    async def pause(sid: str, name: str) -> None:
        cluster.signal(name, signal.SIGSTOP)
        for _ in range(200):  # until another worker owns it (past the TTL)
            if (await owner(cluster, sid))[0] not in ("", name):
                break
            await asyncio.sleep(0.05)
        cluster.signal(name, signal.SIGCONT)  # it wakes with output and a lease it lost

    async def body() -> None:
        call, hearing, paused, takeovers = await a_call_with_a_fault(cluster, pause)
        assert takeovers == 1
        assert_heard_once(call, hearing)
        assert cluster.alive(paused)
        await asyncio.sleep(0.5)
        assert "lost" in cluster.log(paused) or "fenced" in cluster.log(paused)

    run(body)


def test_a_drained_worker_hands_its_call_over_and_exits_cleanly(cluster: ProcessCluster) -> None:
    async def drain(sid: str, name: str) -> None:
        cluster.signal(name, signal.SIGTERM)
        await asyncio.sleep(0.05)
        cluster.signal(name, signal.SIGTERM)  # a second SIGTERM: at once, still no loss

    async def body() -> None:
        call, hearing, drained, takeovers = await a_call_with_a_fault(cluster, drain)
        assert takeovers == 1
        assert_heard_once(call, hearing)
        assert await asyncio.to_thread(cluster.wait, drained, 30.0) == 0
        cluster.worker(drained)
        cluster.wait_ready(drained)

    run(body)


def test_a_killed_gateway_s_call_reconnects_through_another(cluster: ProcessCluster) -> None:
    async def kill_gateway(sid: str, name: str) -> None:
        cluster.signal("g1", signal.SIGKILL)

    async def body() -> None:
        call, hearing, _, takeovers = await a_call_with_a_fault(cluster, kill_gateway)
        assert takeovers == 0  # the worker never noticed
        assert call.reconnects >= 1
        assert_heard_once(call, hearing)
        cluster.gateway("g1", port=cluster.ports["g1"])
        cluster.wait_ready("g1")

    run(body)


def test_a_redis_restart_pauses_calls_and_loses_nothing(cluster: ProcessCluster) -> None:
    assert cluster.redis is not None
    server = cluster.redis

    async def restart(sid: str, name: str) -> None:
        await asyncio.to_thread(server.restart, 1.0)

    async def body() -> None:
        call, hearing, _, takeovers = await a_call_with_a_fault(cluster, restart)
        assert takeovers == 0  # the owner renewed before any dispatcher could fail it over
        assert_heard_once(call, hearing)
        assert all(cluster.alive(name) for name in ("d1", "d2", "w1", "w2", "w3", "g2"))
        assert any("store unavailable" in cluster.log(w) for w in ("w1", "w2", "w3"))

    run(body)


def test_rspp_sessions_move_moves_a_live_call(cluster: ProcessCluster, tmp_path: Path) -> None:
    async def move(sid: str, name: str) -> None:
        target = next(w for w in ("w1", "w2", "w3") if w != name)
        proc = await asyncio.create_subprocess_exec(
            "rspp" if shutil.which("rspp") else str(Path(__file__).parents[2] / ".venv/bin/rspp"),
            "sessions",
            "move",
            sid,
            "--to",
            target,
            "--redis",
            cluster.redis_url,
        )
        assert await proc.wait() == 0

    async def body() -> None:
        call, hearing, _, takeovers = await a_call_with_a_fault(cluster, move)
        assert takeovers == 1
        assert_heard_once(call, hearing)
        assert hearing.longest_gap() < 500.0, f"silences inside replies, by turn: {hearing.gaps}"

    run(body)
