"""A gateway taking up a call another gateway served: it resends only what the client lacks."""

from __future__ import annotations

import asyncio

import msgspec

from rspp.cluster import Lease, MemoryStore, SessionRecord
from rspp.cluster.gateway import ClusterHost, ClusterPort
from rspp.cluster.records import OutputEntry
from rspp.demo import demo_pipeline
from rspp.events import AudioOut, Event, LlmDelta, MsgpackCodec, TurnDone

_CODEC = MsgpackCodec()
_WRITE = msgspec.msgpack.Encoder()


def _entry(token: int, index: int, event: Event) -> bytes:
    """An output entry as a worker writes it."""
    return _WRITE.encode(OutputEntry(token, event.turn, index, _CODEC.encode(event)))


async def _owned_by_w1(store: MemoryStore) -> Lease:
    """A running session ``s`` of the demo pipeline, its lease held by w1."""
    await store.create(SessionRecord(id="s", pipeline="demo", state="running"), ttl_s=60)
    lease = await store.acquire("s", "w1", ttl_ms=60_000)
    assert lease is not None
    return lease


def _items(
    events: list[Event], token_of: dict[int, int] | None = None
) -> list[tuple[OutputEntry, Event]]:
    """Output entries as a worker writes them (token 1 unless ``token_of`` says)."""
    token_of = token_of or {}
    counts: dict[tuple[int, str], int] = {}
    out = []
    for ev in events:
        key = (ev.turn, ev.kind)
        counts[key] = counts.get(key, 0) + 1
        out.append((OutputEntry(token_of.get(id(ev), 1), ev.turn, counts[key], b""), ev))
    return out


def test_the_cut_covers_text_received_after_the_last_audio_frame() -> None:
    async def body() -> None:
        spec = demo_pipeline().spec
        host = ClusterHost(MemoryStore(), {"demo": spec})
        frame = AudioOut(pcm=bytes(640), turn=2, inc=1, pos=7, seq=40)
        # Text carries no inc from the kernel; the stream knows its writer's token.
        text = [LlmDelta(text=w, turn=3, seq=41 + n) for n, w in enumerate(["a", "b"])]
        later = LlmDelta(text="c", turn=3, seq=43)
        done = TurnDone(turn=3, inc=1, pos=8, seq=44)
        port = ClusterPort(host, "s", "demo", spec, resume_after=(1, 7), seq_after=(1, 42))
        kept = port._after_resume_point(_items([frame, *text, later, done]))
        assert [ev for _, ev in kept] == [later, done]  # "a b" it had: not again
        # An older client (no last_seq): cut at its last positioned event only.
        old = ClusterPort(host, "s", "demo", spec, resume_after=(1, 7))
        kept = old._after_resume_point(_items([frame, *text, later, done]))
        assert [ev for _, ev in kept] == [*text, later, done]
        # A new owner numbers seq on from its checkpoint: lower seqs, higher inc.
        again = [
            LlmDelta(text="d", turn=3, inc=2, seq=30),
            AudioOut(pcm=bytes(640), turn=3, inc=2, pos=5, seq=31),
        ]
        kept = port._after_resume_point(_items([frame, *text, *again]))
        assert [ev for _, ev in kept] == again

    asyncio.run(body())


class SlowReads(MemoryStore):
    """Fake store (around the gateway under test): each output read takes 30 ms, longer
    than a reply's audio frames come (every 10 ms here), as on a loaded machine."""

    async def read_output(self, sid: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        await asyncio.sleep(0.03)
        return await super().read_output(sid, after, block_ms)


def test_a_reattached_call_hears_the_reply_while_it_is_still_being_written() -> None:
    """The backlog is read up to where it ended, not until a read finds nothing new: that
    held a call silent, after its gateway died, until the bot's reply ended."""

    async def body() -> None:
        store = SlowReads()
        spec = demo_pipeline().spec
        lease = await _owned_by_w1(store)
        pos = 0

        async def write(n: int) -> None:
            nonlocal pos
            entries = []
            for _ in range(n):
                pos += 1
                frame = AudioOut(pcm=bytes(640), turn=2, inc=1, pos=pos, seq=pos)
                entries.append(_entry(1, pos, frame))
            await store.append_output(lease, entries)

        await write(1500)  # more than a page of backlog: the client has heard 1400 frames
        host = ClusterHost(store, {"demo": spec})
        heard: list[tuple[float, Event]] = []
        loop = asyncio.get_running_loop()
        async with host.running():
            port = await host.reattach("s", last_pos=(1, 1400))
            assert port is not None
            port.listen(lambda ev: heard.append((loop.time(), ev)))
            began = loop.time()
            for _ in range(300):  # the reply goes on for 3 s
                await write(1)
                await asyncio.sleep(0.01)
            writing_ended = loop.time()
            await asyncio.sleep(0.3)
            await port.close()
        frames = [(t, ev) for t, ev in heard if isinstance(ev, AudioOut)]
        assert frames and frames[0][1].pos == 1401  # nothing it had heard
        assert frames[0][0] - began < 1.0, "silent until the reply's writing ended"
        assert frames[0][0] < writing_ended - 1.0

    asyncio.run(body())


def test_text_reaches_the_client_with_its_writer_s_incarnation_and_is_not_resent() -> None:
    """After a move, the new owner's text can come before its audio: the client must not
    take it for the old owner's (it did, from the last audio frame's ``inc``), or its
    ``last_seq`` is too low and a gateway taking the call up sends that text again."""

    async def body() -> None:
        store = MemoryStore()
        spec = demo_pipeline().spec
        old = await _owned_by_w1(store)
        await store.append_output(
            old,
            [
                _entry(1, 1, AudioOut(pcm=bytes(640), turn=2, inc=1, pos=100, seq=49)),
                _entry(1, 1, LlmDelta(text="a", turn=2, seq=50)),
                _entry(1, 2, LlmDelta(text="b", turn=2, seq=51)),
            ],
        )
        await store.release(old, to="w2")
        new = await store.acquire("s", "w2", ttl_ms=60_000)
        assert new is not None and new.token == 2
        await store.append_output(new, [_entry(2, 3, LlmDelta(text="c", turn=2, seq=52))])

        host = ClusterHost(store, {"demo": spec})
        async with host.running():
            first = await host.reattach("s", last_pos=(1, 99))
            assert first is not None
            got: list[Event] = []
            first.listen(got.append)
            await asyncio.sleep(0.2)
            # Each event names its writer: the client's last_seq is (2, 52), not (1, 52).
            assert [(e.kind, e.inc) for e in got] == [
                ("audio.out", 1),
                ("llm.delta", 1),
                ("llm.delta", 1),
                ("llm.delta", 2),
            ]
            await first.close()
            again = await host.reattach("s", last_pos=(1, 100), last_seq=(2, 52))
            assert again is not None
            resent: list[Event] = []
            again.listen(resent.append)
            await asyncio.sleep(0.2)
            assert resent == []  # it had all of it
            await store.append_output(new, [_entry(2, 4, LlmDelta(text="d", turn=2, seq=53))])
            await asyncio.sleep(0.2)
            assert [(e.kind, e.inc, getattr(e, "text", "")) for e in resent] == [
                ("llm.delta", 2, "d")
            ]
            await again.close()

    asyncio.run(body())
