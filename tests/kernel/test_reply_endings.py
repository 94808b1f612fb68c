"""Every reply ends, whatever a node does -- and the next user turn works normally.

A real turn manager and VAD, a scripted caller, and an LLM that misbehaves on
purpose (a bug, a CancelledError of its own, a hang), or a client that clears.
Before, each left the reply RESPONDING forever, and the turn manager took the
user's next words for talk over a bot that said nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from rspp.events import ClearBuffer, Error, Event, SessionEnd, TurnCommit, TurnInterrupted
from rspp.kernel import Pipeline, PipelineSpec, build, load_spec
from rspp.testing import RecordingSink, ScriptedCaller, Utterance, run_virtual

from .helpers import make_pipeline
from .toy_nodes import DyingRun, FlakyLlm, registry

ANSWER = "All good here. Thanks for asking."


def call_pipeline(*, behaviours: list[str], no_progress_ms: float = 20_000.0) -> Pipeline:
    """The demo pipeline (energy VAD, fake ASR, the turn manager, fake TTS, output) with
    the flaky LLM in place of the fake one."""
    from importlib.resources import files
    from pathlib import Path

    spec = load_spec(Path(str(files("rspp.pipelines") / "demo.toml")))
    data = msgspec.to_builtins(spec)
    for node in data["nodes"]:
        if node["name"] == "asr":
            node["config"]["script"] = ["how are you", "are you there", "bye"]
        if node["name"] == "turns":
            node["config"]["speculate"] = False
        if node["name"] == "llm":
            node["type"] = "flaky_llm"
            node["config"] = {"behaviours": behaviours, "reply": ANSWER}
    data["reply"] = {"no_progress_ms": no_progress_ms}
    return build(msgspec.convert(data, PipelineSpec), registry)


def converse(pipeline: Pipeline, lines: int = 2) -> tuple[Any, RecordingSink, list[Event]]:
    sink = RecordingSink()
    seen: list[Event] = []
    script = [Utterance(text) for text in ["how are you", "are you there", "bye"][:lines]]

    async def main() -> Any:
        async with pipeline.session(sinks={"client": sink}, observers=[seen.append]) as session:
            await ScriptedCaller(session, sink, script, max_wait_s=40.0).play()
            return session

    return run_virtual(main()), sink, seen


def replies(sink: RecordingSink) -> list[tuple[str, int, str]]:
    """(how each reply ended, its turn, what of it the client heard)."""
    out = []
    for ev in sink.events:
        if ev.kind == "turn.done":
            out.append(("played", ev.turn, "".join(f.text for f in sink.audio(ev.turn))))
        elif isinstance(ev, TurnInterrupted):
            out.append((ev.reason, ev.turn, ev.heard_text))
    return out


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("raise", "failed"), ("cancel", "failed"), ("hang", "stalled")],
)
def test_a_misbehaving_llm_ends_its_reply_and_the_next_turn_is_answered(
    behaviour: str, reason: str
) -> None:
    pipeline = call_pipeline(behaviours=[behaviour, "ok"], no_progress_ms=2_000.0)
    session, sink, seen = converse(pipeline)
    ended = replies(sink)
    assert [(how, turn) for how, turn, _ in ended] == [(reason, 1), ("played", 2)]
    assert ended[0][2] == ""  # its first word never made a sentence: nothing was spoken
    assert ended[1][2].strip() == ANSWER
    assert session.stats.replies == {reason: 1, "played": 1}
    # The second utterance was a user turn, not a backchannel over a silent bot.
    commits = [ev.text for ev in seen if isinstance(ev, TurnCommit)]  # type: ignore[attr-defined]
    assert commits == ["how are you", "are you there"]
    # What was never heard is not in the history, though the LLM generated it.
    assert [m.text for m in session.conversation.history() if m.role == "assistant"] == [ANSWER]
    codes = [ev.code for ev in seen if isinstance(ev, Error)]  # type: ignore[attr-defined]
    expected = {"raise": "KeyError", "cancel": "RuntimeError", "hang": "ReplyStalled"}[behaviour]
    assert codes == [expected]
    # The worker that failed (or was cancelled for the stall) serves the next reply.
    llm: FlakyLlm = session.node("llm")
    assert llm.requests == 2 and llm.tasks[0] is llm.tasks[1]
    assert session.failure is None


def test_a_client_clear_ends_the_reply_and_the_next_turn_is_answered() -> None:
    pipeline = call_pipeline(behaviours=["ok"])
    sink = RecordingSink()
    script = [Utterance("how are you"), Utterance("are you there")]

    class ClearingSink(RecordingSink):
        session: Any = None

        def send(self, event: Event) -> None:
            super().send(event)
            if event.kind == "audio.out" and len(self.audio()) == 5 and self.session:
                self.session.push(ClearBuffer())  # the client's "stop"

    sink = ClearingSink()

    async def main() -> Any:
        async with pipeline.session(sinks={"client": sink}) as session:
            sink.session = session
            await ScriptedCaller(session, sink, script, max_wait_s=40.0).play()
            return session

    session = run_virtual(main())
    ended = replies(sink)
    assert [(how, turn) for how, turn, _ in ended] == [("cleared", 1), ("played", 2)]
    assert session.stats.replies == {"cleared": 1, "played": 1}


def test_the_no_progress_deadline_is_in_the_spec_and_can_be_turned_off() -> None:
    spec = msgspec.convert(
        {"name": "x", "nodes": [{"name": "p", "type": "passthrough", "inputs": ["input"]}]},
        PipelineSpec,
    )
    assert spec.reply.no_progress_ms == 20_000.0
    pipeline = call_pipeline(behaviours=["hang"], no_progress_ms=0.0)
    sink = RecordingSink()

    async def main() -> Any:
        async with pipeline.session(sinks={"client": sink}) as session:
            with pytest.raises(TimeoutError):
                await ScriptedCaller(session, sink, [Utterance("hi")], max_wait_s=30.0).play()
            return session

    session = run_virtual(main())
    assert session.stats.replies == {"closed": 1}  # nobody ended it before the close


def run_body_pipeline(restarts: int, how: str = "raise") -> Pipeline:
    return make_pipeline(
        [
            {"name": "llm", "type": "fake_llm", "inputs": ["input"]},
            {
                "name": "dying",
                "type": "dying_run",
                "inputs": ["input"],
                "restarts": restarts,
                "config": {"after_ms": 100.0, "how": how},
            },
        ],
        inputs=("turn.commit",),
    )


@pytest.mark.parametrize("how", ["raise", "base"])
def test_a_run_body_that_dies_fails_the_session_loudly(how: str) -> None:
    sink = RecordingSink()
    errors: list[Error] = []
    DyingRun.starts = 0

    async def main() -> Any:
        host = asyncio.current_task()
        session = run_body_pipeline(0, how).session(
            sinks={"client": sink}, observers=[lambda e: isinstance(e, Error) and errors.append(e)]
        )
        async with session:
            await asyncio.wait_for(session.wait_closed(), 5.0)
            assert host is not None and not host.cancelling()  # the host task is untouched
            with pytest.raises(Exception, match="not running"):
                session.push(TurnCommit(text="anyone?"))
        return session

    session = run_virtual(main())
    assert session.failure is not None and "'dying' run died" in session.failure
    assert session.close_reason == "failed" and session.state == "closed"
    (end,) = sink.of_kind("session.end")
    assert isinstance(end, SessionEnd) and end.reason == "failed"
    assert [e.code for e in errors] == ["TaskDied", "SessionFailed"]
    assert DyingRun.starts == 1


def test_a_run_body_with_a_restart_budget_is_restarted_then_fails_the_session() -> None:
    DyingRun.starts = 0

    async def main() -> Any:
        session = run_body_pipeline(2).session()
        async with session:
            await asyncio.wait_for(session.wait_closed(), 5.0)
        return session

    session = run_virtual(main())
    assert DyingRun.starts == 3  # the first run and two restarts
    assert session.stats.restarts == {"dying": 2}
    assert session.failure is not None


def test_a_worker_cancelled_by_someone_else_is_restarted_within_its_budget() -> None:
    pipeline = make_pipeline(
        [
            {"name": "llm", "type": "fake_llm", "inputs": ["input"], "restarts": 1},
            {"name": "sink", "type": "collect", "inputs": ["llm"]},
        ],
        inputs=("turn.commit",),
    )

    async def main() -> None:
        async with pipeline.session() as session:
            session.runner("llm").task.cancel()  # a foreign cancellation (not the kernel's)
            await asyncio.sleep(0.1)
            assert session.running and session.stats.restarts == {"llm": 1}
            session.push(TurnCommit(text="still there?"))
            await asyncio.sleep(5.0)
            assert any(ev.kind == "llm.done" for ev in session.node("sink").seen)
            session.runner("llm").task.cancel()  # again: the budget is spent
            await asyncio.wait_for(session.wait_closed(), 5.0)
            assert session.failure is not None and "cancelled by something" in session.failure

    run_virtual(main())
