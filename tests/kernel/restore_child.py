"""The other process of ``test_resume_in_a_subprocess``: restore a call and carry it on.

``python -m tests.kernel.restore_child SNAPSHOT OUT`` restores the demo call from the
snapshot bytes in SNAPSHOT, lets the reply in progress finish, plays the rest of the
caller's script, and writes what the client received and the conversation to OUT
(MessagePack). It runs on a virtual clock whose origin is not the first process's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from rspp.demo import demo_pipeline
from rspp.kernel import SessionSnapshot
from rspp.testing import RecordingSink, ScriptedCaller, VirtualClock

from .test_resume_process import CALL, Outcome, utterances


async def carry_on(snap: SessionSnapshot) -> Outcome:
    sink = RecordingSink()
    pipeline = demo_pipeline(CALL)
    async with pipeline.session(sinks={"client": sink}, snapshot=snap) as session:
        moved = session.turns.active
        await sink.wait_for(lambda: bool(sink.replies_ended))  # the reply that moved ends
        caller = ScriptedCaller(session, sink, utterances(CALL[2:]), replies_before=1)
        await caller.play()
    return Outcome(
        moved=moved,
        frames=[(f.turn, f.text, f.pcm) for f in sink.audio()],
        ended=[
            (ev.kind, ev.turn) for ev in sink.events if ev.kind in ("turn.done", "turn.interrupted")
        ],
        history=[(m.role, m.text) for m in session.conversation.history()],
        incarnations=sorted({ev.inc for ev in sink.events}),
        first_pos=sink.events[0].pos,
        errors=session.stats.errors.total(),
    )


def main() -> None:
    snap = msgspec.msgpack.decode(Path(sys.argv[1]).read_bytes(), type=SessionSnapshot)
    outcome = VirtualClock(start=123_456.0).run(carry_on(snap))
    Path(sys.argv[2]).write_bytes(msgspec.msgpack.encode(outcome))


if __name__ == "__main__":
    main()
