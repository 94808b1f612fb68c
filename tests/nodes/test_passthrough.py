"""PassThrough forwards whatever reaches it, unchanged and in order."""

from __future__ import annotations

import asyncio

from rspp.events import Event, LlmDelta, TurnCommit
from rspp.testing import run_virtual
from tests.kernel.helpers import make_pipeline


def test_passthrough_forwards_everything_in_order() -> None:
    pipeline = make_pipeline(
        [
            {"name": "tap", "type": "passthrough", "inputs": ["input"]},
            {"name": "sink", "type": "collect", "inputs": ["tap"]},
        ],
        inputs=("llm.delta", "turn.commit"),
    )

    async def main() -> list[Event]:
        async with pipeline.session() as session:
            session.push(TurnCommit(text="q"))  # reply text belongs to a reply
            for text in ["a", "b", "c"]:
                session.push(LlmDelta(text=text))
            await asyncio.sleep(0)
            return list(session.node("sink").seen)

    seen = run_virtual(main())[1:]
    assert [ev.text for ev in seen] == ["a", "b", "c"]  # type: ignore[attr-defined]
    assert [ev.kind for ev in seen] == ["llm.delta"] * 3
    assert len({ev.seq for ev in seen}) == 3
