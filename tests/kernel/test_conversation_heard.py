"""The conversation is what the user heard, once: recorded from the reply's source.

A node that rewrites the reply's text on its way to the TTS (the README's
``Shout``) emits fresh deltas of the same reply. Before, every fresh delta was
appended to the assistant's message, so the history said 'Hi HI there.THERE.'.
"""

from __future__ import annotations

import asyncio

from rspp.events import Interrupt, TurnCommit
from rspp.testing import FakeLlm, RecordingSink, run_virtual

from .helpers import make_pipeline

REPLY = "Hi there. This is a reply of several words that takes a while to say."


def shouting_pipeline():  # type: ignore[no-untyped-def]
    return make_pipeline(
        [
            {
                "name": "llm",
                "type": "fake_llm",
                "inputs": ["input"],
                "config": {"replies": [REPLY, "Fine."], "ttft_ms": 20, "tokens_per_s": 50},
            },
            {"name": "shout", "type": "shout", "inputs": ["llm"]},
            {"name": "tts", "type": "fake_tts", "inputs": ["shout"], "config": {"ttfa_ms": 10}},
            {"name": "output", "type": "audio_output", "inputs": ["tts"], "sink": "client"},
        ],
        inputs=("turn.commit",),
    )


def test_a_rewritten_reply_is_recorded_once_from_its_source() -> None:
    sink = RecordingSink()

    async def main() -> None:
        async with shouting_pipeline().session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="hello"))
            await sink.wait_for(lambda: bool(sink.of_kind("turn.done")))
            history = [(m.role, m.text) for m in session.conversation.history()]
            assert history == [("user", "hello"), ("assistant", REPLY)]

    run_virtual(main())
    heard = "".join(f.text for f in sink.audio(1))
    assert heard == REPLY.upper()  # the user heard the shouted version


def test_a_cut_reply_keeps_the_source_words_the_user_heard() -> None:
    sink = RecordingSink()

    async def main() -> None:
        async with shouting_pipeline().session(sinks={"client": sink}) as session:
            session.push(TurnCommit(text="hello"))
            await sink.wait_for(lambda: len(sink.audio(1)) >= 60)
            session.push(Interrupt())
            (cut,) = sink.of_kind("turn.interrupted")
            heard_words = len(cut.heard_text.split())  # type: ignore[attr-defined]
            assert 0 < heard_words < len(REPLY.split())
            session.push(TurnCommit(text="go on"))
            await asyncio.sleep(0.2)
            llm: FakeLlm = session.node("llm")
            _, prompt = llm.prompts[-1]
            said = " ".join(REPLY.split()[:heard_words])
            assert prompt == [("user", "hello"), ("assistant", said), ("user", "go on")]

    run_virtual(main())
