"""The conversation context (rspp.kernel.conversation): what was said and what was heard."""

from __future__ import annotations

import msgspec
import pytest

from rspp.kernel.conversation import (
    Conversation,
    ConversationSnapshot,
    Message,
    OpenReply,
    cut_to_words,
)


def user(turn: int, text: str) -> Message:
    return Message(role="user", text=text, turn=turn)


def bot(turn: int, text: str, *, interrupted: bool = False) -> Message:
    return Message(role="assistant", text=text, turn=turn, interrupted=interrupted)


def replying(conv: Conversation, turn: int, question: str, *pieces: str) -> None:
    """A committed reply in progress: the user's message, then the LLM's text."""
    conv.user(turn, question)
    for piece in pieces:
        conv.reply_text(turn, piece, "llm")


def replied(conv: Conversation, turn: int, question: str, *pieces: str) -> None:
    """A committed reply that played out."""
    replying(conv, turn, question, *pieces)
    conv.ended(turn, "".join(pieces), interrupted=False)


def test_a_new_conversation_is_empty() -> None:
    conv = Conversation()
    assert conv.history() == []
    assert conv.messages == []
    assert conv.generated(1) == ""
    assert conv.snapshot(1) == ConversationSnapshot()
    assert conv.max_messages == 200


# -- cut_to_words -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "heard", "expected"),
    [
        # Cut to as many words as were heard, in the text's own spelling and punctuation.
        ("Once upon a time, there was a dragon.", "Once upon a time,", "Once upon a time,"),
        ("Once upon a time, there was a dragon.", "ONCE UPON A TIME", "Once upon a time,"),
        ("Hi there, how are you?", "hi", "Hi"),
        ("Well...  I   think so.", "well i", "Well...  I"),  # inner spacing kept, end stripped
        ("one\ntwo\tthree four", "x y z", "one\ntwo\tthree"),
        ("Hi there.", "h", "Hi"),  # words are counted, not compared
        # Heard as many words or more: the whole text, as it is.
        ("Hi there.", "HI THERE.", "Hi there."),
        ("Hi there. ", "hi there", "Hi there. "),
        ("Hi there.", "hi there and more", "Hi there."),
        ("", "anything heard", ""),
        # Nothing heard: nothing.
        ("Hi there.", "", ""),
        ("Hi there.", "   \n ", ""),
    ],
)
def test_cut_to_words(text: str, heard: str, expected: str) -> None:
    assert cut_to_words(text, heard) == expected


def test_cut_to_words_strips_the_trailing_space_of_a_cut() -> None:
    cut = cut_to_words("Once upon a time", "Once upon")
    assert cut == "Once upon"
    assert not cut.endswith(" ")


# -- committed turns --------------------------------------------------------------------


def test_a_commit_adds_the_user_message() -> None:
    conv = Conversation()
    conv.user(1, "hello")
    assert conv.history() == [user(1, "hello")]
    assert conv.history()[0].interrupted is False


def test_the_assistant_message_joins_the_history_only_when_the_reply_ends() -> None:
    conv = Conversation()
    replying(conv, 1, "hi", "Hel", "lo", "", " there.")
    assert conv.history() == [user(1, "hi")]  # in progress: not in the history yet
    assert conv.generated(1) == "Hello there."
    conv.ended(1, "Hello there.", interrupted=False)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello there.")]
    assert conv.history()[1].interrupted is False
    assert conv.generated(1) == ""  # the reply is closed


def test_generated_is_the_text_so_far() -> None:
    conv = Conversation()
    assert conv.generated(1) == ""
    conv.reply_text(1, "One", "llm")
    assert conv.generated(1) == "One"
    conv.reply_text(1, ", two", "llm")
    assert conv.generated(1) == "One, two"
    assert conv.generated(2) == ""


def test_many_pieces_are_joined_once_in_order() -> None:
    conv = Conversation()
    conv.user(1, "count")
    pieces = [f"{n} " for n in range(5_000)]
    for piece in pieces:
        conv.reply_text(1, piece, "llm")
    expected = "".join(pieces)
    assert conv.generated(1) == expected
    conv.ended(1, expected, interrupted=False)
    assert conv.history()[-1] == bot(1, expected.strip())


def test_a_played_reply_keeps_all_of_the_source_text() -> None:
    conv = Conversation()
    replying(conv, 1, "hi", "Hello ", "there.")
    # What was heard went through a rewriting node: the source's text is what is recorded.
    conv.ended(1, "HELLO THERE", interrupted=False)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello there.")]


def test_the_assistant_message_is_stripped() -> None:
    conv = Conversation()
    replying(conv, 1, "hi", "  Hello.", " \n")
    conv.ended(1, "Hello.", interrupted=False)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_a_reply_of_whitespace_only_leaves_no_message() -> None:
    conv = Conversation()
    replying(conv, 1, "hi", " ", "\n")
    conv.ended(1, "", interrupted=False)
    assert conv.history() == [user(1, "hi")]


def test_a_reply_without_text_or_audio_has_no_assistant_message() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.ended(1, "", interrupted=False)
    assert conv.history() == [user(1, "hi")]


def test_a_played_reply_without_a_text_source_records_what_was_heard() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.ended(1, " Pushed audio. ", interrupted=False)  # audio pushed in, no llm.delta
    assert conv.history() == [user(1, "hi"), bot(1, "Pushed audio.")]


def test_ending_an_unknown_turn_with_nothing_heard_is_harmless() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.ended(1, "", interrupted=False)  # twice
    conv.ended(9, "", interrupted=True)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_the_assistant_message_lands_where_the_reply_ends() -> None:
    conv = Conversation()
    replying(conv, 1, "one", "First.")
    conv.user(2, "two")  # came before reply 1 ended
    conv.ended(1, "First.", interrupted=False)
    assert conv.history() == [user(1, "one"), user(2, "two"), bot(1, "First.")]


def test_open_replies_are_independent() -> None:
    conv = Conversation()
    replying(conv, 1, "a", "first ", "answer")
    replying(conv, 2, "b", "second")
    conv.reply_text(1, "!", "llm")
    assert (conv.generated(1), conv.generated(2)) == ("first answer!", "second")
    conv.ended(1, "first answer!", interrupted=False)
    assert conv.generated(2) == "second"
    conv.ended(2, "", interrupted=True)
    assert conv.history() == [user(1, "a"), user(2, "b"), bot(1, "first answer!")]


# -- the reply's source -----------------------------------------------------------------


def test_shout_the_readme_scenario() -> None:
    """A node that rewrites deltas on their way to the TTS does not double the history."""
    conv = Conversation()
    conv.user(1, "hello")
    conv.reply_text(1, "Hi ", "llm")
    conv.reply_text(1, "HI ", "shout")
    conv.reply_text(1, "there.", "llm")
    conv.reply_text(1, "THERE.", "shout")
    assert conv.generated(1) == "Hi there."
    conv.ended(1, "HI THERE.", interrupted=False)  # what was played is the shouted text
    assert conv.history() == [user(1, "hello"), bot(1, "Hi there.")]


def test_shout_interrupted_cuts_the_source_text_to_the_words_heard() -> None:
    conv = Conversation()
    conv.user(1, "story")
    for piece in ("Once upon ", "a time, ", "there was a dragon."):
        conv.reply_text(1, piece, "llm")
        conv.reply_text(1, piece.upper(), "shout")
    conv.ended(1, "ONCE UPON A TIME,", interrupted=True)
    assert conv.history() == [user(1, "story"), bot(1, "Once upon a time,", interrupted=True)]


def test_the_first_source_to_emit_text_is_the_one_recorded() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.reply_text(1, "FIRST ", "shout")  # whoever is first is the source
    conv.reply_text(1, "ignored", "llm")
    conv.reply_text(1, "SECOND", "shout")
    assert conv.generated(1) == "FIRST SECOND"
    conv.ended(1, "", interrupted=False)
    assert conv.history() == [user(1, "hi"), bot(1, "FIRST SECOND")]


def test_an_empty_first_piece_still_picks_the_source() -> None:
    conv = Conversation()
    conv.reply_text(1, "", "llm")
    conv.reply_text(1, "other", "shout")
    conv.reply_text(1, "mine", "llm")
    assert conv.generated(1) == "mine"


def test_the_source_is_per_turn() -> None:
    conv = Conversation()
    conv.reply_text(1, "one", "llm")
    conv.reply_text(2, "TWO", "shout")
    conv.reply_text(2, "two", "llm")
    conv.reply_text(1, "ONE", "shout")
    assert (conv.generated(1), conv.generated(2)) == ("one", "TWO")


def test_a_new_reply_of_the_same_turn_after_it_ended_picks_its_source_again() -> None:
    conv = Conversation()
    conv.reply_text(1, "one", "llm")
    conv.ended(1, "one", interrupted=False)
    conv.reply_text(1, "late", "shout")  # an open reply starts afresh
    assert conv.generated(1) == "late"


# -- interruptions ------------------------------------------------------------------------


def test_interrupted_cuts_the_assistant_message_to_what_was_heard() -> None:
    conv = Conversation()
    replying(conv, 1, "tell me a story", "Once upon a time, ", "there was a dragon.")
    conv.ended(1, "Once upon a time,", interrupted=True)
    conv.user(2, "stop")
    assert conv.history() == [
        user(1, "tell me a story"),
        bot(1, "Once upon a time,", interrupted=True),
        user(2, "stop"),
    ]


def test_interrupted_after_hearing_every_word_keeps_the_whole_text_but_marks_it() -> None:
    conv = Conversation()
    replying(conv, 1, "hi", "Hello ", "there.")
    conv.ended(1, "hello there", interrupted=True)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello there.", interrupted=True)]


def test_interrupted_with_nothing_heard_leaves_no_assistant_message() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    replying(conv, 2, "again", "Not heard at all.")
    conv.ended(2, "", interrupted=True)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello."), user(2, "again")]
    assert conv.generated(2) == ""


def test_interrupted_before_any_text_with_nothing_heard_changes_nothing() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.ended(1, "", interrupted=True)
    assert conv.history() == [user(1, "hi")]


def test_interrupted_with_heard_text_but_no_source_records_what_was_heard() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.ended(1, "Hel ", interrupted=True)
    assert conv.history() == [user(1, "hi"), bot(1, "Hel", interrupted=True)]


def test_interrupting_one_reply_leaves_the_others_alone() -> None:
    conv = Conversation()
    replied(conv, 1, "a", "first answer")
    replying(conv, 2, "b", "second answer")
    conv.ended(2, "", interrupted=True)
    assert conv.history() == [user(1, "a"), bot(1, "first answer"), user(2, "b")]


# -- speculation ---------------------------------------------------------------------------


def test_a_tentative_turn_is_not_in_the_history() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.user(2, "what time", tentative=True)
    conv.reply_text(2, "It is ", "llm")
    conv.reply_text(2, "noon.", "llm")
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]
    assert conv.history(before=3) == [user(1, "hi"), bot(1, "Hello.")]
    assert conv.generated(2) == "It is noon."


def test_confirm_adds_the_tentative_user_message_and_the_reply_joins_at_its_end() -> None:
    conv = Conversation()
    conv.user(1, "what time", tentative=True)
    conv.reply_text(1, "It is ", "llm")
    conv.confirm(1)
    assert conv.history() == [user(1, "what time")]
    conv.reply_text(1, "noon.", "llm")  # the reply goes on after the confirm
    assert conv.generated(1) == "It is noon."
    conv.ended(1, "It is noon.", interrupted=False)
    assert conv.history() == [user(1, "what time"), bot(1, "It is noon.")]


def test_confirm_before_any_text_adds_the_user_message() -> None:
    conv = Conversation()
    conv.user(1, "hi", tentative=True)
    conv.confirm(1)
    assert conv.history() == [user(1, "hi")]
    conv.reply_text(1, "Hello.", "llm")
    conv.ended(1, "Hello.", interrupted=False)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_confirm_of_an_unknown_or_already_confirmed_turn_changes_nothing() -> None:
    conv = Conversation()
    conv.user(1, "hi", tentative=True)
    conv.confirm(1)
    conv.confirm(1)
    conv.confirm(7)
    assert conv.history() == [user(1, "hi")]


def test_drop_forgets_the_tentative_turn_and_its_text() -> None:
    conv = Conversation()
    conv.user(1, "what tim", tentative=True)
    conv.reply_text(1, "Sorry?", "llm")
    conv.drop(1)
    assert conv.generated(1) == ""
    conv.confirm(1)  # too late: nothing left to confirm
    conv.ended(1, "", interrupted=False)  # nor any text to record
    assert conv.history() == []


def test_drop_of_an_unknown_turn_is_harmless() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.drop(1)
    conv.drop(5)
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_a_replaced_speculation_leaves_only_the_one_confirmed() -> None:
    conv = Conversation()
    conv.user(1, "book a", tentative=True)
    conv.reply_text(1, "Which?", "llm")
    conv.drop(1)
    conv.user(2, "book a table", tentative=True)
    conv.reply_text(2, "For how many?", "llm")
    conv.confirm(2)
    conv.ended(2, "For how many?", interrupted=False)
    assert conv.history() == [user(2, "book a table"), bot(2, "For how many?")]


def test_a_speculation_miss_then_a_commit() -> None:
    conv = Conversation()
    conv.user(1, "turn on", tentative=True)
    conv.reply_text(1, "Turning on.", "llm")
    conv.drop(1)
    replied(conv, 2, "turn on the lights", "Lights on.")
    assert conv.history() == [user(2, "turn on the lights"), bot(2, "Lights on.")]


def test_a_confirmed_speculation_can_be_interrupted_like_any_reply() -> None:
    conv = Conversation()
    conv.user(1, "story", tentative=True)
    conv.reply_text(1, "Once upon a time", "llm")
    conv.confirm(1)
    conv.ended(1, "Once", interrupted=True)
    assert conv.history() == [user(1, "story"), bot(1, "Once", interrupted=True)]


def test_tentative_and_committed_turns_are_independent() -> None:
    conv = Conversation()
    replying(conv, 1, "first", "First")
    conv.ended(1, "Fi", interrupted=True)  # "Fi" is one word: the whole word
    conv.user(2, "sec", tentative=True)
    conv.reply_text(2, "x", "llm")
    conv.drop(2)
    conv.user(3, "second", tentative=True)
    conv.reply_text(3, "Second", "llm")
    assert conv.history() == [user(1, "first"), bot(1, "First", interrupted=True)]
    conv.confirm(3)
    conv.ended(3, "Second", interrupted=False)
    assert conv.history() == [
        user(1, "first"),
        bot(1, "First", interrupted=True),
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


def test_history_is_a_copy_of_the_list_and_of_the_messages() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    history = conv.history()
    history.clear()
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]
    before = conv.history(before=2)
    before.append(user(9, "x"))
    before[0].text = "changed"
    conv.history()[1].text = "changed too"
    assert conv.history() == [user(1, "hi"), bot(1, "Hello.")]


def test_max_messages_keeps_the_newest() -> None:
    conv = Conversation(max_messages=3)
    replied(conv, 1, "q1", "a1")
    replied(conv, 2, "q2", "a2")
    assert conv.history() == [bot(1, "a1"), user(2, "q2"), bot(2, "a2")]
    conv.user(3, "q3", tentative=True)
    conv.reply_text(3, "a3", "llm")
    assert len(conv.history()) == 3  # tentative messages and open replies do not count
    conv.confirm(3)
    assert conv.history() == [user(2, "q2"), bot(2, "a2"), user(3, "q3")]
    conv.ended(3, "a3", interrupted=False)
    assert conv.history() == [bot(2, "a2"), user(3, "q3"), bot(3, "a3")]
    assert len(conv.messages) == 3


# -- moving a session -----------------------------------------------------------------------


def test_snapshot_holds_the_history_the_active_reply_and_its_tentative_message() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    replying(conv, 2, "story", "Once upon")
    conv.ended(2, "Once", interrupted=True)
    conv.user(3, "what", tentative=True)
    conv.reply_text(3, "Yes", "llm")
    conv.reply_text(3, "YES", "shout")
    conv.reply_text(3, "?", "llm")
    conv.reply_text(4, "another open reply", "llm")  # not the active one: not moved
    committed = [
        user(1, "hi"),
        bot(1, "Hello."),
        user(2, "story"),
        bot(2, "Once", interrupted=True),
    ]
    snap = conv.snapshot(3)
    assert snap == ConversationSnapshot(
        messages=committed,
        reply=OpenReply(turn=3, source="llm", text="Yes?"),
        tentative=user(3, "what"),
    )
    # Another active turn: its reply, no tentative message.
    assert conv.snapshot(4) == ConversationSnapshot(
        messages=committed, reply=OpenReply(turn=4, source="llm", text="another open reply")
    )
    # A turn with nothing open: only the history.
    assert conv.snapshot(9) == ConversationSnapshot(messages=committed)


def test_snapshot_restore_round_trip_through_the_wire() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.user(2, "story", tentative=True)
    conv.reply_text(2, "Once ", "llm")
    conv.reply_text(2, "ONCE ", "shout")
    conv.reply_text(2, "upon", "llm")
    snap = conv.snapshot(2)
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=ConversationSnapshot)
    assert wire == snap
    assert msgspec.json.decode(msgspec.json.encode(snap), type=ConversationSnapshot) == snap

    moved = Conversation()
    moved.restore(wire)
    assert moved.history() == [user(1, "hi"), bot(1, "Hello.")]
    assert moved.generated(2) == "Once upon"
    assert moved.snapshot(2) == snap
    # The reply goes on where it was, from the same source.
    moved.reply_text(2, " A TIME", "shout")
    moved.reply_text(2, " a time", "llm")
    moved.confirm(2)
    moved.ended(2, "ONCE UPON", interrupted=True)
    assert moved.history() == [
        user(1, "hi"),
        bot(1, "Hello."),
        user(2, "story"),
        bot(2, "Once upon", interrupted=True),
    ]


def test_a_restored_tentative_message_can_be_dropped() -> None:
    conv = Conversation()
    conv.user(1, "hm", tentative=True)
    conv.reply_text(1, "Yes?", "llm")
    moved = Conversation()
    moved.restore(conv.snapshot(1))
    moved.drop(1)
    moved.confirm(1)
    moved.ended(1, "", interrupted=False)
    assert moved.history() == []


def test_a_restored_reply_without_text_still_knows_its_source() -> None:
    conv = Conversation()
    conv.user(1, "hi")
    conv.reply_text(1, "", "llm")
    snap = conv.snapshot(1)
    assert snap.reply == OpenReply(turn=1, source="llm", text="")
    moved = Conversation()
    moved.restore(snap)
    moved.reply_text(1, "IGNORED", "shout")
    moved.reply_text(1, "Hello.", "llm")
    assert moved.generated(1) == "Hello."


def test_restore_replaces_the_history_and_forgets_open_and_tentative_turns() -> None:
    conv = Conversation()
    replying(conv, 5, "old", "open reply")
    conv.user(6, "tentative", tentative=True)
    conv.restore(ConversationSnapshot(messages=[user(1, "a"), bot(1, "b")]))
    assert conv.history() == [user(1, "a"), bot(1, "b")]
    assert conv.generated(5) == ""
    conv.confirm(6)
    assert conv.history() == [user(1, "a"), bot(1, "b")]
    conv.ended(5, "", interrupted=False)  # the open reply was forgotten: nothing to record
    assert conv.history() == [user(1, "a"), bot(1, "b")]


def test_restore_keeps_only_the_newest_max_messages() -> None:
    source = Conversation()
    for turn in (1, 2, 3):
        replied(source, turn, f"q{turn}", f"a{turn}")
    moved = Conversation(max_messages=4)
    moved.restore(source.snapshot(4))
    assert moved.history() == [user(2, "q2"), bot(2, "a2"), user(3, "q3"), bot(3, "a3")]


def test_restore_takes_a_copy() -> None:
    snap = ConversationSnapshot(
        messages=[user(1, "a"), bot(1, "b")],
        reply=OpenReply(turn=2, source="llm", text="So "),
        tentative=user(2, "q"),
    )
    conv = Conversation()
    conv.restore(snap)
    snap.messages[0].text = "changed"
    snap.messages.append(user(9, "x"))
    assert snap.reply is not None and snap.tentative is not None
    snap.reply.text = "changed"
    snap.tentative.text = "changed"
    assert conv.history() == [user(1, "a"), bot(1, "b")]
    assert conv.generated(2) == "So "
    conv.confirm(2)
    assert conv.history()[-1] == user(2, "q")


def test_a_snapshot_does_not_change_with_the_conversation() -> None:
    conv = Conversation()
    replied(conv, 1, "hi", "Hello.")
    conv.user(2, "story", tentative=True)
    conv.reply_text(2, "Once", "llm")  # a reply in progress
    snap = conv.snapshot(2)
    encoded = msgspec.msgpack.encode(snap)
    conv.reply_text(2, " upon a time", "llm")
    conv.confirm(2)
    conv.ended(2, "On", interrupted=True)
    conv.user(3, "next")
    conv.messages[0].text = "changed in place"
    assert msgspec.msgpack.encode(snap) == encoded
    assert snap.messages == [user(1, "hi"), bot(1, "Hello.")]
    assert snap.reply == OpenReply(turn=2, source="llm", text="Once")
