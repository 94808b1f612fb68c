"""A gateway taking up a call another gateway served: it resends only what the client lacks."""

from __future__ import annotations

import asyncio

from rspp.cluster import MemoryStore
from rspp.cluster.gateway import ClusterHost, ClusterPort
from rspp.cluster.records import OutputEntry
from rspp.demo import demo_pipeline
from rspp.events import AudioOut, Event, LlmDelta, TurnDone


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
        # Text carries no inc on the wire; the stream knows its writer's token.
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
