"""Gemma 3 270M through llama.cpp: it streams, it stops on cancel within a token."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from rspp.events import Interrupt, LlmDelta, LlmDone, TurnCommit
from rspp.providers.local.llama import LlamaModel, few_shot_prompt
from tests.kernel.helpers import make_pipeline

from .feeding import until


def test_the_model_streams_text_token_by_token() -> None:
    model = LlamaModel()
    tokens: list[tuple[float, str]] = []
    reason = model.generate(
        few_shot_prompt([], "how far is paris from london"),
        lambda t: tokens.append((time.perf_counter(), t)),
        threading.Event(),
        max_tokens=24,
        seed=1,
    )
    assert reason in ("stop", "length")
    assert len(tokens) >= 3
    assert "".join(t for _, t in tokens).strip()
    assert tokens[-1][0] > tokens[0][0]  # they arrived one by one, not in one piece


def test_cancel_stops_the_generation_within_one_token() -> None:
    model = LlamaModel()
    cancel = threading.Event()
    after: list[str] = []
    seen: list[str] = []

    def on_text(text: str) -> None:
        (after if cancel.is_set() else seen).append(text)
        if len(seen) == 3:
            cancel.set()

    reason = model.generate(
        few_shot_prompt([], "tell me a long story about a dragon"),
        on_text,
        cancel,
        max_tokens=200,
        seed=2,
    )
    assert reason == "cancelled"
    assert len(seen) == 3 and len(after) <= 1


def test_the_node_streams_a_reply_and_a_barge_in_stops_it() -> None:
    pipeline = make_pipeline(
        [
            {
                "name": "llm",
                "type": "llama_llm",
                "inputs": ["input"],
                "config": {"max_tokens": 200, "seed": 3},
            },
            {"name": "sink", "type": "collect", "inputs": ["llm"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        async with pipeline.session() as session:
            # Every generation the node starts: tokens made before and after its cancel
            # flag was set, and how it ended.
            model = session.node("llm").model
            real = model.generate
            calls: list[dict[str, Any]] = []

            def generate(prompt: str, on_text: Any, cancel: threading.Event, **kw: Any) -> str:
                call: dict[str, Any] = {"before": 0, "after": 0, "reason": None}
                calls.append(call)

                def counted(text: str) -> None:
                    call["after" if cancel.is_set() else "before"] += 1
                    on_text(text)

                call["reason"] = real(prompt, counted, cancel, **kw)
                return str(call["reason"])

            model.generate = generate
            session.push(TurnCommit(text="what is a good dessert"))
            await until(lambda: any(isinstance(e, LlmDone) for e in session.node("sink").seen))
            reply = [e.text for e in session.node("sink").seen if isinstance(e, LlmDelta)]
            assert len(reply) >= 3 and "".join(reply).strip()

            session.push(TurnCommit(text="tell me a very long story about the sea"))
            await until(
                lambda: (
                    sum(isinstance(e, LlmDelta) for e in session.node("sink").seen)
                    >= len(reply) + 3
                )
            )
            session.push(Interrupt())
            count = len(session.node("sink").seen)
            await asyncio.sleep(0.5)
            # Nothing more reaches anyone, and the model is free again: the story's
            # generation ended on the cancel, within a token, long before its 200-token
            # budget, and the next reply is a new generation that runs and is heard.
            assert len(session.node("sink").seen) == count
            session.push(TurnCommit(text="thanks"))
            story = calls[1]
            await until(
                lambda: len(session.node("sink").seen) > count and story["reason"] is not None
            )
            assert story["reason"] == "cancelled", story
            assert story["after"] <= 1 and story["before"] + story["after"] < 200, story
            assert len(calls) == 3

    asyncio.run(main())
