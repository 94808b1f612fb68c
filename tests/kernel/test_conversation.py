"""The conversation context (rspp.kernel.conversation): what was said and what was heard."""

from __future__ import annotations

import msgspec

from rspp.kernel.conversation import Conversation, Message


def user(turn: int, text: str) -> Message:
    return Message(role="user", text=text, turn=turn)


def bot(turn: int, text: str, *, interrupted: bool = False) -> Message:
    return Message(role="assistant", text=text, turn=turn, interrupted=interrupted)


def replied(conv: Conversation, turn: int, question: str, *deltas: str) -> None:
    """A committed reply: the user's message, then the assistant's deltas."""
    conv.user(turn, question)
    for delta in deltas:
        conv.assistant_delta(turn, delta)


def test_a_new_conversation_is_empty() -> None:
    conv = Conversation()
    assert conv.history() == []
    assert conv.snapshot() == []
    assert conv.max_messages == 200


# -- committed turns --------------------------------------------------------------------


def test_a_commit_adds_the_user_message() -> None:
    conv = Conversation()
    conv.user(1, "hello")
    assert conv.history() == [user(1, "hello")]
    assert conv.history()[0].interrupted is False


def test_deltas_accumulate_into_one_assistant_message_per_reply() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hel", "lo", "", " there.")
    assert conv.history() == [user(1, "hi"), bot(1, "Hello there.")]


def test_the_first_delta_opens_the_assistant_message_in_order() -> None:
    conv = Conversation()
    conv.user(1, "one")
    conv.assistant_delta(1, "")  # even an empty first delta opens it
    conv.user(2, "two")  # barge-in: the next user message comes after it
    conv.assistant_delta(1, "late")  # still the same message of reply 1
    assert conv.history() == [user(1, "one"), bot(1, "late"), user(2, "two")]


def test_finished_keeps_the_assistant_message_as_it_is() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.finished(1)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]
    conv.finished(1)  # twice, or an unknown turn: harmless
    conv.finished(9)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_a_reply_without_deltas_has_no_assistant_message() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.finished(1)
    assert conv.history() == [user(1, "hi")]


# -- interruptions ------------------------------------------------------------------------


def test_interrupted_cuts_the_assistant_message_to_what_was_heard() -> None:
    conv = Conversation()
    replied(conv, 1, "tell me a story", "Once upon a time, ", "there was a dragon.")
    conv.user(2, "stop")
    conv.interrupted(1, "Once upon a time,")
    assert conv.history() == [
        user(1, "tell me a story"),
        bot(1, "Once upon a time,", interrupted=True),
        user(2, "stop"),
    ]


def test_interrupted_with_nothing_heard_removes_the_assistant_message() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    replied(conv, 2, "again", "Not heard at all.")
    conv.interrupted(2, "")
    assert conv.history() == [user(1, "hi"), bot(1, "Hello."), user(2, "again")]


def test_interrupted_before_any_delta_with_nothing_heard_changes_nothing() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.interrupted(1, "")
    assert conv.history() == [user(1, "hi")]


def test_interrupted_with_heard_text_but_no_open_message_records_what_was_heard() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.interrupted(1, "Hel")
    assert conv.history() == [user(1, "hi"), bot(1, "Hel", interrupted=True)]


def test_interrupting_one_reply_leaves_the_others_alone() -> None:
    conv = Conversation()
    replied(conv, 1, "a", "first answer")
    conv.finished(1)
    replied(conv, 2, "b", "second answer")
    conv.interrupted(2, "")
    assert conv.history() == [user(1, "a"), bot(1, "first answer"), user(2, "b")]


# -- speculation ---------------------------------------------------------------------------


def test_a_tentative_turn_is_not_in_the_history() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.user(2, "what time", tentative=True)
    conv.assistant_delta(2, "It is ")
    conv.assistant_delta(2, "noon.")
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]
    assert conv.history(before=3) == [user(1, "hi"), bot(1, "Hello.")]
    assert conv.snapshot() == [user(1, "hi"), bot(1, "Hello.")]


def test_confirm_adds_the_tentative_turn_with_its_reply_so_far() -> None:
    conv = Conversation()
    conv.user(1, "what time", tentative=True)
    conv.assistant_delta(1, "It is ")
    conv.confirm(1)
    assert conv.history() == [user(1, "what time"), bot(1, "It is ")]
    conv.assistant_delta(1, "noon.")  # the reply goes on after the confirm
    assert conv.history() == [user(1, "what time"), bot(1, "It is noon.")]


def test_confirm_before_any_delta_adds_the_user_message_then_the_reply() -> None:
    conv = Conversation()
    conv.user(1, "hi", tentative=True)
    conv.confirm(1)
    assert conv.history() == [user(1, "hi")]
    conv.assistant_delta(1, "Hello.")
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_confirm_of_an_unknown_or_already_confirmed_turn_changes_nothing() -> None:
    conv = Conversation()
    conv.user(1, "hi", tentative=True)
    conv.confirm(1)
    conv.confirm(1)
    conv.confirm(7)
    assert conv.history() == [user(1, "hi")]


def test_drop_forgets_the_tentative_turn() -> None:
    conv = Conversation()
    conv.user(1, "what tim", tentative=True)
    conv.assistant_delta(1, "Sorry?")
    conv.drop(1)
    conv.confirm(1)  # too late: nothing left to confirm
    assert conv.history() == []


def test_a_replaced_speculation_leaves_only_the_one_confirmed() -> None:
    conv = Conversation()
    conv.user(1, "book a", tentative=True)
    conv.assistant_delta(1, "Which?")
    conv.drop(1)
    conv.user(2, "book a table", tentative=True)
    conv.assistant_delta(2, "For how many?")
    conv.confirm(2)
    assert conv.history() == [user(2, "book a table"), bot(2, "For how many?")]


def test_a_speculation_miss_then_a_commit() -> None:
    conv = Conversation()
    conv.user(1, "turn on", tentative=True)
    conv.assistant_delta(1, "Turning on.")
    conv.drop(1)
    replied(conv, 2, "turn on the lights", "Lights on.")
    assert conv.history() == [user(2, "turn on the lights"), bot(2, "Lights on.")]


def test_a_confirmed_speculation_can_be_interrupted_like_any_reply() -> None:
    conv = Conversation()
    conv.user(1, "story", tentative=True)
    conv.assistant_delta(1, "Once upon a time")
    conv.confirm(1)
    conv.interrupted(1, "Once")
    assert conv.history() == [user(1, "story"), bot(1, "Once", interrupted=True)]


def test_tentative_and_committed_turns_are_independent() -> None:
    conv = Conversation()
    replied(conv, 1, "first", "First")  # still being spoken
    conv.interrupted(1, "Fi")
    conv.user(2, "sec", tentative=True)
    conv.assistant_delta(2, "x")
    conv.drop(2)
    conv.user(3, "second", tentative=True)
    conv.assistant_delta(3, "Second")
    assert conv.history() == [user(1, "first"), bot(1, "Fi", interrupted=True)]
    conv.confirm(3)
    assert conv.history() == [
        user(1, "first"),
        bot(1, "Fi", interrupted=True),
        user(3, "second"),
        bot(3, "Second"),
    ]


# -- history and its bound -----------------------------------------------------------------


def test_history_before_excludes_that_turn_and_later() -> None:
    conv = Conversation()
    for turn in (1, 2, 3, 4):
        replied(conv, turn, f"q{turn}", f"a{turn}")
    assert conv.history(before=3) == [user(1, "q1"), bot(1, "a1"), user(2, "q2"), bot(2, "a2")]
    assert conv.history(before=1) == []
    assert conv.history(before=5) == conv.history()
    assert len(conv.history()) == 8


def test_history_is_a_copy_of_the_list() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    history = conv.history()
    history.clear()
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]
    before = conv.history(before=2)
    before.append(user(9, "x"))
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_max_messages_keeps_the_newest() -> None:
    conv = Conversation(max_messages=3)
    replied(conv, 1, "q1", "a1")
    replied(conv, 2, "q2", "a2")
    assert conv.history() == [bot(1, "a1"), user(2, "q2"), bot(2, "a2")]
    conv.user(3, "q3", tentative=True)
    assert len(conv.history()) == 3  # tentative messages do not count
    conv.confirm(3)
    assert conv.history() == [user(2, "q2"), bot(2, "a2"), user(3, "q3")]
    conv.assistant_delta(3, "a3")
    assert conv.history() == [bot(2, "a2"), user(3, "q3"), bot(3, "a3")]
    assert len(conv.messages) == 3


def test_an_evicted_open_message_does_not_come_back() -> None:
    conv = Conversation(max_messages=2)
    replied(conv, 1, "q1", "a1")
    replied(conv, 2, "q2")  # evicts user 1
    conv.user(3, "q3")  # evicts the open assistant message of reply 1
    conv.assistant_delta(1, " more")
    conv.interrupted(1, "")
    assert conv.history() == [user(2, "q2"), user(3, "q3")]


# -- moving a session -----------------------------------------------------------------------


def test_snapshot_restore_round_trip_of_the_committed_history() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.finished(1)
    replied(conv, 2, "story", "Once upon")
    conv.interrupted(2, "Once")
    conv.user(3, "hm", tentative=True)  # not worth moving
    conv.assistant_delta(3, "Yes?")
    snap = conv.snapshot()
    expected = [user(1, "hi"), bot(1, "Hello."), user(2, "story"), bot(2, "Once", interrupted=True)]
    assert snap == expected
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=list[Message])
    assert wire == snap
    assert msgspec.json.decode(msgspec.json.encode(snap), type=list[Message]) == snap

    moved = Conversation()
    moved.restore(wire)
    assert moved.history() == expected
    moved.confirm(3)  # the tentative turn did not move
    assert moved.history() == expected
    moved.user(4, "next")
    assert moved.history() == [*expected, user(4, "next")]
    assert wire == expected  # restore took a copy of the list
    wire[1].text = "changed afterwards"  # ... and of the messages
    assert moved.history(before=4) == expected


def test_restore_replaces_the_history_and_forgets_open_and_tentative_turns() -> None:
    conv = Conversation()
    replied(conv, 5, "old", "open reply")
    conv.user(6, "tentative", tentative=True)
    conv.restore([user(1, "a"), bot(1, "b")])
    assert conv.history() == [user(1, "a"), bot(1, "b")]
    conv.confirm(6)
    assert conv.history() == [user(1, "a"), bot(1, "b")]
    conv.interrupted(5, "")  # the open reply was forgotten: nothing to cut
    assert conv.history() == [user(1, "a"), bot(1, "b")]


def test_a_snapshot_does_not_change_with_the_conversation() -> None:
    conv = Conversation()
    replied(conv, 1, "story", "Once")  # a reply in progress
    snap = conv.snapshot()
    encoded = msgspec.msgpack.encode(snap)
    conv.assistant_delta(1, " upon a time")
    conv.interrupted(1, "On")
    conv.user(2, "next")
    assert msgspec.msgpack.encode(snap) == encoded
    assert snap == [user(1, "story"), bot(1, "Once")]
