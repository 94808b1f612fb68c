"""CommitOnFinal: every non-empty final transcript ends the user's turn."""

from __future__ import annotations

import asyncio
from typing import Any

from rspp.events import AsrFinal, Event, TurnCommit
from rspp.testing import run_virtual
from tests.kernel.helpers import make_pipeline


def commits_for(finals: list[str], **config: Any) -> list[TurnCommit]:
    pipeline = make_pipeline(
        [{"name": "endpoint", "type": "commit_on_final", "inputs": ["input"], "config": config}],
        inputs=("asr.final",),
    )
    events: list[Event] = []

    async def main() -> None:
        async with pipeline.session(observers=[events.append]) as session:
            for text in finals:
                session.push(AsrFinal(text=text))
                await asyncio.sleep(0.01)

    run_virtual(main())
    return [ev for ev in events if isinstance(ev, TurnCommit)]


def test_commits_the_stripped_text_of_a_final() -> None:
    (commit,) = commits_for(["  hello there \n"])
    assert commit.text == "hello there"
    assert commit.turn == 1


def test_empty_and_blank_finals_do_not_commit() -> None:
    assert commits_for(["", "   ", "\n\t"]) == []


def test_each_final_commits_its_own_turn() -> None:
    commits = commits_for(["first", "", "second", "  ", "third"])
    assert [c.text for c in commits] == ["first", "second", "third"]
    assert [c.turn for c in commits] == [1, 2, 3]


def test_min_chars_counts_the_stripped_text() -> None:
    commits = commits_for(["hi", "  hi  ", "hey", " ok? "], min_chars=3)
    assert [c.text for c in commits] == ["hey", "ok?"]


def test_commit_keeps_the_final_origin() -> None:
    pipeline = make_pipeline(
        [{"name": "endpoint", "type": "commit_on_final", "inputs": ["input"]}],
        inputs=("asr.final",),
    )
    events: list[Event] = []

    async def main() -> None:
        async with pipeline.session(observers=[events.append]) as session:
            await asyncio.sleep(1.0)
            session.push(AsrFinal(text="x", origin_ns=123_456_789))
            await asyncio.sleep(0)

    run_virtual(main())
    (commit,) = [ev for ev in events if isinstance(ev, TurnCommit)]
    assert commit.origin_ns == 123_456_789
