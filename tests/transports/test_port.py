"""What a caller sees of a session: :class:`rspp.transports.port.Visibility`."""

from __future__ import annotations

from rspp.events import (
    AsrPartial,
    AudioIn,
    LlmDelta,
    TurnCommit,
    TurnConfirm,
    TurnInterrupted,
    TurnSpeculate,
    VadSpeechStart,
)
from rspp.transports.port import Visibility


def kinds(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.kind for e in events]


def test_a_confirmed_speculation_is_shown_at_its_confirmation_in_order() -> None:
    see = Visibility()
    assert see(TurnSpeculate(turn=2, text="hi")) == []
    assert see(LlmDelta(turn=2, text="Hello")) == []
    shown = see(TurnConfirm(turn=2))
    assert kinds(shown) == ["turn.speculate", "turn.confirm", "llm.delta"]
    assert kinds(see(LlmDelta(turn=2, text=" there"))) == ["llm.delta"]


def test_a_discarded_speculation_is_never_shown() -> None:
    see = Visibility()
    see(TurnSpeculate(turn=2, text="hi"))
    see(LlmDelta(turn=2, text="Hello"))
    assert see(TurnInterrupted(turn=2, reason="speculation_miss")) == []
    assert kinds(see(TurnCommit(turn=3, text="hi there"))) == ["turn.commit"]
    assert kinds(see(LlmDelta(turn=3, text="Hey"))) == ["llm.delta"]


def test_a_committed_reply_and_the_users_side_are_shown_as_they_come() -> None:
    see = Visibility()
    for event in (VadSpeechStart(), AsrPartial(text="hel"), TurnCommit(turn=1, text="hello")):
        assert see(event) == [event]
    assert see(AudioIn(pcm=b"\0\0", sample_rate=16000)) == []  # not the caller's business
    interrupted = TurnInterrupted(turn=1, reason="barge_in")
    assert see(interrupted) == [interrupted]
