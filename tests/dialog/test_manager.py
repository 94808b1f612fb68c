"""The sans-IO turn manager, played as scenarios on a virtual timeline.

Each test plays a timeline of observations (times in ms) through :class:`Call`,
which does what the shell (``rspp.nodes.turn_manager``) and the kernel would:
it calls ``timeout()`` as soon as the manager's deadline is reached, and answers
every Commit/Speculate with ``reply_started`` and the next reply number. What
the manager decided is in ``call.log``: ``(time in ms, effect)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rspp.dialog.manager import (
    Bot,
    Commit,
    Confirm,
    Discard,
    Effect,
    Interrupt,
    ManagerSnapshot,
    PauseOutput,
    ResumeOutput,
    Speculate,
    TurnManager,
    User,
)
from rspp.dialog.policy import TurnPolicy
from rspp.dialog.predictor import heuristic_end_of_turn

MS = 1_000_000


class Call:
    """A virtual call: plays observations into a TurnManager and records what it decides."""

    def __init__(
        self,
        predictor: Callable[[str], float] | None = None,
        *,
        watch: Callable[[str, int, Bot, list[Effect]], None] | None = None,
        **policy: Any,
    ) -> None:
        self.manager = TurnManager(TurnPolicy(**policy), predictor)
        self.now = 0  # ns
        self.log: list[tuple[float, Effect]] = []
        self.next_turn = 1
        #: Called after every manager call: (what was called, its turn arg, bot before, effects).
        self.watch = watch

    # -- the timeline ---------------------------------------------------------------------

    def until(self, ms: float) -> Call:
        """Let time pass up to ``ms``, calling timeout() at every deadline reached on the way."""
        to = round(ms * MS)
        assert to >= self.now, "the timeline goes forward"
        self._fire_due(to)
        self.now = to
        return self

    def start(self, ms: float) -> list[Effect]:
        self.until(ms)
        return self._observed("start", 0, lambda: self.manager.speech_start(self.now))

    def end(self, ms: float, ended: float | None = None) -> list[Effect]:
        """The VAD says at ``ms`` that speech ended at ``ended`` (default: ``ms``)."""
        self.until(ms)
        ended_ns = self.now if ended is None else round(ended * MS)
        return self._observed("end", 0, lambda: self.manager.speech_end(self.now, ended_ns))

    def partial(self, ms: float, text: str, stable: str = "") -> list[Effect]:
        self.until(ms)
        return self._observed("partial", 0, lambda: self.manager.partial(self.now, text, stable))

    def final(self, ms: float, text: str) -> list[Effect]:
        self.until(ms)
        return self._observed("final", 0, lambda: self.manager.final(self.now, text))

    def reply_ended(self, ms: float, turn: int | None = None) -> list[Effect]:
        """Reply ``turn`` (default: the committed reply in progress) ended."""
        self.until(ms)
        target = self.manager.reply if turn is None else turn
        return self._observed("reply_ended", target, lambda: self.manager.reply_ended(target))

    def settle(self) -> Call:
        """Run every remaining timeout."""
        for _ in range(100):
            deadline = self.manager.deadline
            if deadline is None:
                return self
            self.until(max(deadline, self.now) / MS)
        raise AssertionError("the manager keeps asking for timeouts")

    # -- what was decided ---------------------------------------------------------------

    @property
    def effects(self) -> list[Effect]:
        return [effect for _, effect in self.log]

    def since(self, ms: float) -> list[tuple[float, Effect]]:
        return [(t, e) for t, e in self.log if t >= ms]

    # -- internals ------------------------------------------------------------------------

    def _fire_due(self, to: int) -> None:
        for _ in range(100):
            deadline = self.manager.deadline
            if deadline is None or deadline > to:
                return
            self.now = max(self.now, deadline)
            self._invoke("timeout", 0, lambda: self.manager.timeout(self.now))
        raise AssertionError("the manager keeps asking for timeouts")

    def _observed(self, what: str, turn: int, call: Callable[[], list[Effect]]) -> list[Effect]:
        effects = self._invoke(what, turn, call)
        self._fire_due(self.now)  # a deadline already past fires at once, as the shell's timer
        return effects

    def _invoke(self, what: str, turn: int, call: Callable[[], list[Effect]]) -> list[Effect]:
        bot_before = self.manager.bot
        effects = call()
        for effect in effects:
            self.log.append((self.now / MS, effect))
            if isinstance(effect, Commit | Speculate):  # the kernel numbers the reply
                number, self.next_turn = self.next_turn, self.next_turn + 1
                self.manager.reply_started(number, speculative=isinstance(effect, Speculate))
        if self.watch is not None:
            self.watch(what, turn, bot_before, effects)
        return effects


def bot_speaking(**policy: Any) -> Call:
    """A call where the user said "hi there" and reply 1 is playing (committed at 900 ms)."""
    call = Call(**policy)
    call.start(0)
    call.partial(200, "hi there")
    call.end(400)
    call.final(450, "hi there")
    call.until(1000)
    assert call.log[-1] in [(900, Commit("hi there")), (900, Confirm(1))]
    assert call.manager.bot is Bot.SPEAKING and call.manager.reply == 1
    return call


# -- end of turn ----------------------------------------------------------------------------


def test_turn_commits_the_final_silence_ms_after_speech_ended() -> None:
    call = Call()
    assert call.start(0) == []
    assert call.manager.user is User.SPEAKING
    assert call.partial(200, "what's the") == []
    assert call.end(400) == []
    assert call.manager.user is User.PAUSED
    assert call.manager.deadline == 900 * MS
    assert call.final(450, "What's the weather?") == []
    call.settle()
    assert call.log == [(900, Commit("What's the weather?"))]
    assert call.manager.user is User.IDLE and call.manager.bot is Bot.SPEAKING
    assert call.manager.reply == 1 and call.manager.deadline is None


def test_silence_is_counted_from_when_speech_ended_not_from_the_vad_report() -> None:
    call = Call()
    call.start(0)
    call.final(450, "what's the weather")  # the ASR was quicker than the VAD
    call.end(700, ended=400)
    assert call.manager.deadline == 900 * MS
    call.settle()
    assert call.log == [(900, Commit("what's the weather"))]


def test_a_late_vad_report_past_the_window_ends_the_turn_at_once() -> None:
    call = Call()
    call.start(0)
    call.final(500, "what's the weather")
    call.end(1000, ended=400)  # the window closed at 900: before the VAD said so
    assert call.log == [(1000, Commit("what's the weather"))]


def test_a_late_vad_report_without_final_awaits_the_final_at_once() -> None:
    call = Call()
    call.start(0)
    call.end(1000, ended=400)
    assert call.log == []
    assert call.manager.user is User.AWAIT_FINAL
    assert call.manager.deadline == 2500 * MS  # final_timeout_ms from when the window ran out
    call.final(1100, "lights off")
    assert call.log == [(1100, Commit("lights off"))]


def test_a_final_after_the_silence_window_commits_when_it_arrives() -> None:
    call = Call()
    call.start(0)
    call.partial(200, "book a")
    call.end(400)
    call.until(900)
    assert call.manager.user is User.AWAIT_FINAL
    assert call.manager.deadline == 2400 * MS
    assert call.log == []
    call.final(1200, "book a table")
    assert call.log == [(1200, Commit("book a table"))]
    assert call.manager.deadline is None


def test_a_final_that_never_arrives_commits_the_last_partial_after_final_timeout() -> None:
    call = Call()
    call.start(0)
    call.partial(200, "turn the")
    call.partial(300, "turn the lights off")
    call.end(400)
    call.settle()
    assert call.log == [(2400, Commit("turn the lights off"))]
    assert call.final(2600, "turn the lights off") == []  # too late: dropped
    call.settle()
    assert call.log == [(2400, Commit("turn the lights off"))]


def test_final_timeout_with_no_partial_commits_nothing() -> None:
    call = Call()
    call.start(0)
    call.end(400)
    call.settle()
    assert call.log == []
    assert call.manager.user is User.IDLE and call.manager.bot is Bot.SILENT


def test_a_late_final_after_final_timeout_is_not_taken_for_the_next_segment() -> None:
    """The doc: each segment produces exactly one final, in order; a late one is stale."""
    call = Call()
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    call.until(2400)
    assert call.log == [(2400, Commit("book a table"))]
    call.reply_ended(3000)
    call.start(3100)
    call.final(3200, "book a table for two")  # the first segment's final, very late
    call.end(3600)
    call.final(3700, "what time")
    call.settle()
    assert call.since(3000) == [(4100, Commit("what time"))]


def test_pauses_shorter_than_the_window_join_the_segments_into_one_turn() -> None:
    call = Call()
    call.start(0)
    call.partial(200, "I want")
    call.end(400)
    call.final(450, "I want")
    call.start(700)  # before 900: the window stops
    assert call.manager.deadline is None
    call.partial(900, "a pizza")
    call.end(1100)
    call.final(1150, "a pizza")
    call.start(1500)
    call.end(1700)
    call.final(1750, "with olives")
    call.settle()
    assert call.log == [(2200, Commit("I want a pizza with olives"))]


def test_a_segment_whose_final_is_still_due_joins_the_turn_in_order() -> None:
    call = Call()
    call.start(0)
    call.end(400)
    call.start(600)
    call.final(650, "I want")  # the first segment's final, while the second is spoken
    call.end(900)
    call.final(950, "a pizza")
    call.settle()
    assert call.log == [(1400, Commit("I want a pizza"))]


def test_an_empty_transcript_commits_nothing() -> None:
    call = Call()
    call.start(0)
    call.end(300)
    call.final(350, "  ")
    call.settle()
    assert call.log == []
    assert call.manager.user is User.IDLE
    assert call.manager.bot is Bot.SILENT
    assert call.manager.deadline is None
    # and the next turn is a fresh one
    call.start(1000)
    call.end(1300)
    call.final(1350, "hello")
    call.settle()
    assert call.log == [(1800, Commit("hello"))]


def test_a_confident_predictor_shortens_the_window_to_fast_silence_ms() -> None:
    seen: list[str] = []

    def predictor(text: str) -> float:
        seen.append(text)
        return 0.9

    call = Call(predictor)
    call.start(0)
    call.partial(200, "what time is it")
    call.end(400)
    assert call.manager.deadline == 600 * MS
    call.final(450, "What time is it?")
    call.settle()
    assert call.log == [(600, Commit("What time is it?"))]
    assert seen == ["what time is it", "What time is it?"]


@pytest.mark.parametrize(
    ("probability", "commit_at"), [(0.8, 600), (0.79, 900), (0.1, 900), (1.0, 600)]
)
def test_the_predictor_threshold_is_inclusive(probability: float, commit_at: int) -> None:
    call = Call(lambda _text: probability)
    call.start(0)
    call.partial(200, "hello")
    call.end(400)
    call.final(450, "hello")
    call.settle()
    assert call.log == [(commit_at, Commit("hello"))]


def test_the_predictor_is_not_asked_about_an_empty_transcript() -> None:
    seen: list[str] = []
    call = Call(lambda text: seen.append(text) or 1.0)
    call.start(0)
    call.end(400)
    assert call.manager.deadline == 900 * MS
    assert seen == []


def test_the_final_is_re_evaluated_and_can_shorten_the_window() -> None:
    call = Call(lambda text: 0.9 if text.endswith("?") else 0.1)
    call.start(0)
    call.partial(200, "what time is it")
    call.end(400)
    assert call.manager.deadline == 900 * MS
    call.final(450, "What time is it?")
    assert call.manager.deadline == 600 * MS
    call.settle()
    assert call.log == [(600, Commit("What time is it?"))]


def test_the_final_never_lengthens_a_shortened_window() -> None:
    call = Call(lambda text: 0.9 if text.endswith("?") else 0.1)
    call.start(0)
    call.partial(200, "What time is it?")
    call.end(400)
    assert call.manager.deadline == 600 * MS
    call.final(450, "what time is it")
    assert call.manager.deadline == 600 * MS
    call.settle()
    assert call.log == [(600, Commit("what time is it"))]


def test_a_final_that_shortens_the_window_into_the_past_commits_at_once() -> None:
    call = Call(lambda text: 0.9 if text.endswith("?") else 0.1)
    call.start(0)
    call.partial(200, "is it")
    call.end(400)
    call.final(700, "Is it open?")  # the window is now 600: already over
    assert call.log == [(700, Commit("Is it open?"))]


def test_the_predictor_judges_the_whole_turn_not_only_its_finished_segments() -> None:
    """A final of an earlier segment must not make the predictor ignore the words after it."""
    call = Call(heuristic_end_of_turn)
    call.start(0)
    call.end(300)
    call.start(400)  # the first segment's final is still due
    call.partial(500, "for two and")
    call.end(700)
    assert call.manager.deadline == 1200 * MS  # "... and" dangles: the full window
    call.final(750, "Book a table.")  # the first segment
    call.final(800, "for two and")
    call.settle()
    assert call.log == [(1200, Commit("Book a table. for two and"))]


# -- speculation ----------------------------------------------------------------------------


def test_speculates_at_speech_end_on_the_partial_and_confirms_a_matching_final() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a table")
    assert call.end(400) == [Speculate("book a table")]
    assert call.manager.speculation == (1, "book a table")
    assert call.final(450, "Book a table.") == []  # the same words: no second speculation
    call.settle()
    assert call.log == [(400, Speculate("book a table")), (900, Confirm(1))]
    assert call.manager.reply == 1
    assert call.manager.speculation is None
    assert call.manager.bot is Bot.SPEAKING


def test_stable_mode_speculates_on_the_stable_prefix_only() -> None:
    call = Call(speculate=True, speculate_on="stable")
    call.start(0)
    call.partial(200, "book a table for", stable="book a table")
    call.end(400)
    call.final(450, "book a table for two")
    call.settle()
    assert call.log == [
        (400, Speculate("book a table")),
        (450, Speculate("book a table for two")),
        (900, Confirm(2)),
    ]
    assert call.manager.reply == 2


def test_stable_mode_with_nothing_stable_waits_for_the_final() -> None:
    call = Call(speculate=True, speculate_on="stable")
    call.start(0)
    call.partial(200, "book a table", stable="")
    assert call.end(400) == []
    call.final(450, "book a table")
    call.settle()
    assert call.log == [(450, Speculate("book a table")), (900, Confirm(1))]


def test_a_final_that_differs_speculates_again() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a cable")
    call.end(400)
    assert call.final(450, "Book a table.") == [Speculate("Book a table.")]
    call.settle()
    assert call.log == [
        (400, Speculate("book a cable")),
        (450, Speculate("Book a table.")),
        (900, Confirm(2)),
    ]


def test_no_duplicate_speculation_for_the_same_normalized_text() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "Book a table")
    call.end(400)
    call.start(600)  # the speculation is discarded ...
    call.end(700)  # ... no new words: the same transcript (the first segment's partial) again
    call.final(750, "book a table!")  # the same words, normalized: no new speculation
    call.final(800, "")
    call.settle()
    assert call.log == [
        (400, Speculate("Book a table")),
        (600, Discard(1)),
        (700, Speculate("Book a table")),
        (1200, Confirm(2)),
    ]


def test_the_user_resuming_speech_discards_the_speculation() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    call.final(450, "book a table")
    assert call.start(700) == [Discard(1)]
    assert call.manager.speculation is None
    call.partial(900, "for two")
    call.end(1000)
    call.final(1050, "for two")
    call.settle()
    assert call.log == [
        (400, Speculate("book a table")),
        (700, Discard(1)),
        (1000, Speculate("book a table for two")),
        (1500, Confirm(2)),
    ]


def test_resuming_speech_while_awaiting_the_final_discards_too() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    call.until(1000)
    assert call.manager.user is User.AWAIT_FINAL
    assert call.start(1000) == [Discard(1)]


def test_a_speculation_that_misses_is_replaced_by_a_commit_without_confirm() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    call.until(900)  # no final yet: AWAIT_FINAL, no respeculation possible any more
    call.final(1000, "book a cab")
    assert call.log == [(400, Speculate("book a table")), (1000, Commit("book a cab"))]
    assert call.manager.reply == 2
    assert call.manager.speculation is None


def test_a_stable_prefix_speculation_misses_the_last_partial_on_final_timeout() -> None:
    call = Call(speculate=True, speculate_on="stable")
    call.start(0)
    call.partial(200, "book a table", stable="book a")
    call.end(400)
    call.settle()
    assert call.log == [(400, Speculate("book a")), (2400, Commit("book a table"))]


@pytest.mark.parametrize(
    ("match", "max_edits", "final", "hit"),
    [
        ("exact", 0, "book a table", True),
        ("exact", 0, "  book a table ", True),
        ("exact", 0, "Book a table.", False),
        ("normalized", 0, "Book a table.", True),
        ("normalized", 0, "book the table", False),
        ("words", 0, "Book, a table!", True),
        ("words", 0, "book the table", False),
        ("words", 1, "book the table", True),
        ("words", 1, "book a table now", True),
        ("words", 1, "book the big table", False),
        ("words", 2, "book the big table", True),
    ],
)
def test_match_modes_decide_between_confirm_and_commit(
    match: str, max_edits: int, final: str, hit: bool
) -> None:
    call = Call(speculate=True, match=match, max_word_edits=max_edits)
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    call.until(900)  # the final comes after the window: no respeculation on it
    call.final(1000, final)
    expected: Effect = Confirm(1) if hit else Commit(final.strip())
    assert call.log == [(400, Speculate("book a table")), (1000, expected)]
    assert call.manager.reply == (1 if hit else 2)


def test_no_speculation_without_the_policy() -> None:
    call = Call()
    call.start(0)
    call.partial(200, "book a table")
    assert call.end(400) == []
    call.settle()
    assert call.effects == [Commit("book a table")]


def test_an_empty_turn_discards_its_speculation() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "um")
    call.end(400)
    call.final(450, "")
    call.settle()
    assert call.log == [(400, Speculate("um")), (900, Discard(1))]
    assert call.manager.bot is Bot.SILENT


def test_never_speculates_while_the_bot_speaks_or_holds() -> None:
    call = bot_speaking(speculate=True, interrupt_min_words=2)
    call.start(2000)
    call.partial(2400, "yeah")
    call.end(2500)  # a backchannel: rejected
    call.final(2550, "yeah")  # dropped
    call.start(3000)
    call.end(3500)  # long enough, no words yet: the final decides
    call.final(3550, "uh")  # a backchannel: not an interruption
    call.start(4000)
    call.partial(4100, "wait")  # one word: not enough
    call.end(4400)
    call.final(4450, "wait please")  # two words: accepted, a user turn now
    call.settle()
    assert call.since(1000) == [
        (2000, PauseOutput()),
        (2500, ResumeOutput("not_an_interruption")),
        (3000, PauseOutput()),
        (3550, ResumeOutput("not_an_interruption")),
        (4000, PauseOutput()),
        (4450, Interrupt()),
        (4450, ResumeOutput("interruption_accepted")),
        (4900, Commit("wait please")),  # no Speculate at 4400 or 4450: the bot was holding
    ]


def test_speculation_resumes_once_an_interruption_made_the_bot_silent() -> None:
    call = bot_speaking(speculate=True)
    call.start(2000)
    call.partial(2350, "wait stop")
    assert call.manager.bot is Bot.SILENT
    assert call.end(2500) == [Speculate("wait stop")]
    call.final(2550, "wait stop")
    call.settle()
    assert call.since(2000) == [
        (2000, PauseOutput()),
        (2350, Interrupt()),
        (2350, ResumeOutput("interruption_accepted")),
        (2500, Speculate("wait stop")),
        (3000, Confirm(2)),
    ]


# -- barge-in -------------------------------------------------------------------------------


def test_speech_over_the_bot_pauses_the_output_and_holds() -> None:
    call = bot_speaking()
    assert call.start(2000) == [PauseOutput()]
    assert call.manager.bot is Bot.HOLDING
    assert call.manager.user is User.SPEAKING
    assert call.manager.deadline == 2300 * MS


def test_without_pause_while_undecided_the_output_keeps_playing() -> None:
    call = bot_speaking(pause_while_undecided=False)
    assert call.start(2000) == []
    assert call.manager.bot is Bot.HOLDING
    call.partial(2400, "stop please")
    assert call.since(2000) == [(2400, Interrupt())]


def test_a_barge_in_with_words_is_accepted_at_interrupt_min_ms_and_becomes_the_turn() -> None:
    call = bot_speaking()
    call.start(2000)
    assert call.partial(2100, "wait, stop") == []  # too early
    call.until(2300)
    assert call.since(2000) == [
        (2000, PauseOutput()),
        (2300, Interrupt()),
        (2300, ResumeOutput("interruption_accepted")),
    ]
    assert call.manager.bot is Bot.SILENT
    assert call.manager.reply == 0
    assert call.manager.user is User.SPEAKING
    call.partial(2400, "wait stop I meant")
    call.end(2600)
    call.final(2650, "wait stop I meant Friday")
    call.settle()
    assert call.since(2400) == [(3100, Commit("wait stop I meant Friday"))]
    assert call.manager.reply == 2


def test_a_barge_in_is_accepted_on_the_partial_that_brings_the_words() -> None:
    call = bot_speaking()
    call.start(2000)
    call.until(2300)
    assert call.since(2000) == [(2000, PauseOutput())]  # no words yet at 300 ms
    assert call.partial(2400, "stop") == [Interrupt(), ResumeOutput("interruption_accepted")]


@pytest.mark.parametrize("text", ["uh-huh", "yeah okay", "Mm hmm.", "okay right sure"])
def test_a_backchannel_is_not_an_interruption_and_its_final_is_dropped(text: str) -> None:
    call = bot_speaking()
    call.start(2000)
    call.partial(2100, text)
    call.until(2400)
    assert call.end(2500) == [ResumeOutput("not_an_interruption")]
    assert call.manager.bot is Bot.SPEAKING
    assert call.manager.user is User.IDLE
    assert call.manager.reply == 1
    assert call.final(2550, text) == []
    call.settle()
    assert call.since(2000) == [(2000, PauseOutput()), (2500, ResumeOutput("not_an_interruption"))]


def test_a_backchannel_that_becomes_a_sentence_interrupts() -> None:
    call = bot_speaking()
    call.start(2000)
    call.partial(2100, "yeah")
    call.until(2400)
    assert call.partial(2450, "yeah but wait") == [
        Interrupt(),
        ResumeOutput("interruption_accepted"),
    ]


def test_speech_shorter_than_interrupt_min_ms_is_rejected() -> None:
    call = bot_speaking()
    call.start(2000)
    call.partial(2100, "stop")
    assert call.end(2200) == [ResumeOutput("not_an_interruption")]
    assert call.manager.deadline is None
    assert call.final(2250, "stop") == []
    call.settle()
    assert call.since(2000) == [(2000, PauseOutput()), (2200, ResumeOutput("not_an_interruption"))]
    assert call.manager.bot is Bot.SPEAKING and call.manager.reply == 1


def test_the_barge_in_duration_is_counted_until_speech_ended_not_until_reported() -> None:
    call = bot_speaking()
    call.start(2000)
    assert call.end(2400, ended=2200) == [ResumeOutput("not_an_interruption")]
    assert call.since(2000) == [(2000, PauseOutput()), (2400, ResumeOutput("not_an_interruption"))]


def test_long_speech_without_words_is_decided_by_its_final() -> None:
    call = bot_speaking()
    call.start(2000)
    assert call.end(2500) == []
    assert call.manager.bot is Bot.HOLDING
    assert call.manager.deadline == 4000 * MS  # final_timeout_ms after the VAD report
    assert call.final(2700, "stop talking") == [
        Interrupt(),
        ResumeOutput("interruption_accepted"),
    ]
    assert call.manager.deadline == 3000 * MS  # the user's turn: silence from speech end
    call.settle()
    assert call.since(2000) == [
        (2000, PauseOutput()),
        (2700, Interrupt()),
        (2700, ResumeOutput("interruption_accepted")),
        (3000, Commit("stop talking")),
    ]


def test_a_deciding_final_after_the_window_interrupts_and_commits_at_once() -> None:
    call = bot_speaking()
    call.start(2000)
    call.end(2500)
    assert call.final(3200, "stop talking") == [
        Interrupt(),
        ResumeOutput("interruption_accepted"),
        Commit("stop talking"),
    ]
    assert call.manager.reply == 2


@pytest.mark.parametrize("text", ["okay", "", "Yeah yeah."])
def test_a_deciding_final_that_is_a_backchannel_or_empty_is_rejected(text: str) -> None:
    call = bot_speaking()
    call.start(2000)
    call.end(2500)
    assert call.final(2700, text) == [ResumeOutput("not_an_interruption")]
    call.settle()
    assert call.since(2000) == [(2000, PauseOutput()), (2700, ResumeOutput("not_an_interruption"))]


def test_a_deciding_final_that_never_comes_rejects_the_barge_in() -> None:
    call = bot_speaking()
    call.start(2000)
    call.end(2500)
    call.until(4000)
    assert call.since(2000) == [(2000, PauseOutput()), (4000, ResumeOutput("not_an_interruption"))]
    assert call.final(4100, "stop talking") == []  # dropped
    call.settle()
    assert len(call.log) == 3
    assert call.manager.bot is Bot.SPEAKING


def test_interrupt_min_words_zero_lets_duration_alone_decide() -> None:
    call = bot_speaking(interrupt_min_words=0)
    call.start(2000)
    call.partial(2100, "uh huh")  # even a backchannel
    call.until(2300)
    assert call.since(2000) == [
        (2000, PauseOutput()),
        (2300, Interrupt()),
        (2300, ResumeOutput("interruption_accepted")),
    ]
    call.end(2500)
    call.final(2550, "uh huh")
    call.settle()
    assert call.since(2301) == [(3000, Commit("uh huh"))]


def test_interrupt_min_words_zero_still_rejects_short_speech() -> None:
    call = bot_speaking(interrupt_min_words=0)
    call.start(2000)
    assert call.end(2250) == [ResumeOutput("not_an_interruption")]


def test_no_minimum_at_all_interrupts_on_speech_start() -> None:
    call = bot_speaking(interrupt_min_words=0, interrupt_min_ms=0)
    assert call.start(2000) == [
        PauseOutput(),
        Interrupt(),
        ResumeOutput("interruption_accepted"),
    ]


def test_the_reply_ending_while_holding_resumes_and_the_speech_is_a_user_turn() -> None:
    call = bot_speaking()
    call.start(2000)
    call.end(2500)  # no words yet: the final would decide
    assert call.reply_ended(2600) == [ResumeOutput("reply_ended")]
    assert call.manager.bot is Bot.SILENT
    assert call.manager.reply == 0
    assert call.manager.deadline == 3000 * MS
    call.final(2700, "so what about Friday")
    call.settle()
    assert call.since(2000) == [
        (2000, PauseOutput()),
        (2600, ResumeOutput("reply_ended")),
        (3000, Commit("so what about Friday")),
    ]


def test_the_reply_ending_while_holding_and_speaking_does_not_interrupt_later() -> None:
    call = bot_speaking()
    call.start(2000)
    call.partial(2100, "so what about")
    assert call.reply_ended(2150) == [ResumeOutput("reply_ended")]
    assert call.manager.bot is Bot.SILENT
    call.partial(2400, "so what about Friday")  # past interrupt_min_ms: no reply to interrupt
    call.end(2600)
    call.final(2650, "so what about Friday")
    call.settle()
    assert call.since(2000) == [
        (2000, PauseOutput()),
        (2150, ResumeOutput("reply_ended")),
        (3100, Commit("so what about Friday")),
    ]


def test_the_reply_ending_while_holding_without_pause_emits_nothing() -> None:
    call = bot_speaking(pause_while_undecided=False)
    call.start(2000)
    assert call.reply_ended(2100) == []
    assert call.manager.bot is Bot.SILENT


def test_a_second_segment_of_an_undecided_barge_in_can_decide_it() -> None:
    call = bot_speaking()
    call.start(2000)
    call.end(2500)  # no words yet
    call.start(2600)  # the user goes on: the words to come decide
    assert call.manager.deadline is None
    call.final(2650, "so")  # the first segment's final
    assert call.partial(2700, "what about Friday") == [
        Interrupt(),
        ResumeOutput("interruption_accepted"),
    ]
    call.end(2900)
    call.final(2950, "what about Friday")
    call.settle()
    assert call.since(2701) == [(3400, Commit("so what about Friday"))]


# -- bookkeeping ----------------------------------------------------------------------------


def test_a_final_with_no_pending_segment_is_dropped() -> None:
    call = Call()
    assert call.final(100, "hello") == []
    call.start(200)
    call.end(500)
    call.final(550, "bye")
    call.settle()
    assert call.log == [(1000, Commit("bye"))]


def test_the_speculation_ending_clears_it() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    assert call.reply_ended(420, 1) == []  # the kernel dropped it
    assert call.manager.speculation is None
    assert call.manager.bot is Bot.SILENT
    call.until(900)
    call.final(1000, "book a table")
    assert call.log == [(400, Speculate("book a table")), (1000, Commit("book a table"))]


def test_a_confirmed_speculation_is_the_reply_until_it_ends() -> None:
    call = Call(speculate=True)
    call.start(0)
    call.partial(200, "book a table")
    call.end(400)
    call.final(450, "book a table")
    call.until(900)
    assert call.effects == [Speculate("book a table"), Confirm(1)]
    assert (call.manager.bot, call.manager.reply) == (Bot.SPEAKING, 1)
    assert call.start(1500) == [PauseOutput()]  # talking over it is a barge-in
    call.end(1600)
    assert call.reply_ended(1700, 1) == []  # already resumed: the speech was too short
    assert (call.manager.bot, call.manager.reply) == (Bot.SILENT, 0)
    assert call.since(1000) == [(1500, PauseOutput()), (1600, ResumeOutput("not_an_interruption"))]


def test_replies_ending_that_are_not_the_current_one_are_ignored() -> None:
    call = bot_speaking()
    assert call.reply_ended(1000, 0) == []
    assert call.reply_ended(1000, 7) == []
    assert call.manager.bot is Bot.SPEAKING and call.manager.reply == 1
    assert call.reply_ended(1100) == []
    assert call.manager.bot is Bot.SILENT and call.manager.reply == 0
    assert call.reply_ended(1200, 1) == []  # twice: nothing
    assert call.manager.bot is Bot.SILENT


def test_a_user_turn_after_the_reply_ended_starts_fresh() -> None:
    call = bot_speaking()
    call.reply_ended(1500)
    call.start(2000)
    call.end(2300)
    call.final(2350, "thanks")
    call.settle()
    assert call.since(1000) == [(2800, Commit("thanks"))]
    assert call.manager.reply == 2


def _moved(call: Call, **policy: Any) -> Call:
    """A new Call whose manager is restored from ``call``'s snapshot, through the wire."""
    wire = msgspec.msgpack.encode(call.manager.snapshot())
    other = Call(**policy)
    other.manager.restore(msgspec.msgpack.decode(wire, type=ManagerSnapshot))
    other.now, other.next_turn = call.now, call.next_turn
    return other


def test_snapshot_and_restore_between_turns() -> None:
    call = bot_speaking()
    snap = call.manager.snapshot()
    assert (snap.user, snap.bot, snap.reply, snap.segments) == ("idle", "speaking", 1, [])
    other = _moved(call)
    assert other.manager.snapshot() == snap
    assert (other.manager.user, other.manager.bot, other.manager.reply) == (
        User.IDLE,
        Bot.SPEAKING,
        1,
    )
    assert other.reply_ended(3000, 1) == []
    assert other.manager.bot is Bot.SILENT


def test_a_user_turn_in_progress_moves_with_a_snapshot() -> None:
    policy: dict[str, Any] = {"speculate": True}
    call = Call(**policy)
    call.start(0)
    call.end(300)
    call.partial(320, "I want", "I")
    call.final(350, "I want")
    call.start(500)  # the user goes on: the speculation is discarded, a segment is pending
    call.partial(700, "a table", "a")
    snap = call.manager.snapshot()
    assert snap.user == "speaking" and snap.segments == ["I want"] and len(snap.pending) == 1
    other = _moved(call, **policy)
    assert other.manager.snapshot() == snap
    # Both go on with the same observations and decide the same things at the same times.
    for c in (call, other):
        c.end(900)
        c.final(950, "a table")
        c.settle()
    assert other.log == call.since(900)
    assert [type(e) for _, e in other.log][-1] in (Commit, Confirm)


def test_a_holding_bot_moves_with_its_undecided_barge_in() -> None:
    call = bot_speaking()
    call.start(2000)
    snap = call.manager.snapshot()
    assert snap.bot == "holding" and snap.paused and snap.deadline is not None
    other = _moved(call)
    assert other.manager.bot is Bot.HOLDING and other.manager.reply == 1
    for c in (call, other):
        c.partial(2400, "wait stop that")
        c.settle()
    assert other.log == call.since(2000.001)
    assert any(isinstance(e, Interrupt) for _, e in other.log)


# -- properties -----------------------------------------------------------------------------


class Invariants:
    """Watches every manager call like the kernel would, asserting the effects make sense."""

    def __init__(self, call_policy: dict[str, Any]) -> None:
        self.pausing = call_policy["pause_while_undecided"]
        self.next_turn = 1  # numbered as Call numbers them
        self.reply = 0  # the committed reply in progress
        self.held = 0  # the speculation in flight
        self.paused = False
        self.manager: TurnManager | None = None

    def __call__(self, what: str, turn: int, bot_before: Bot, effects: list[Effect]) -> None:
        if what == "reply_ended" and turn:
            self.reply = 0 if turn == self.reply else self.reply
            self.held = 0 if turn == self.held else self.held
        replies = 0
        for effect in effects:
            if isinstance(effect, Speculate):
                assert bot_before is Bot.SILENT, f"Speculate while the bot is {bot_before}"
                assert self.reply == 0, "Speculate while a reply is in progress"
                assert effect.text.strip(), "Speculate on nothing"
                self.held = self._number()  # a new speculation replaces the old one
            elif isinstance(effect, Commit):
                assert self.reply == 0, "Commit while a reply is in progress"
                assert effect.text.strip(), "Commit of nothing"
                self.reply, self.held = self._number(), 0  # a missed speculation is dropped
                replies += 1
            elif isinstance(effect, Confirm):
                assert self.held and effect.turn == self.held, "Confirm of no held speculation"
                assert self.reply == 0, "Confirm while a reply is in progress"
                self.reply, self.held = effect.turn, 0
                replies += 1
            elif isinstance(effect, Discard):
                assert self.held and effect.turn == self.held, "Discard of no held speculation"
                self.held = 0
            elif isinstance(effect, Interrupt):
                assert bot_before is Bot.HOLDING or (
                    what == "start" and bot_before is Bot.SPEAKING
                ), f"Interrupt ({what}) while the bot was {bot_before}"
                assert self.reply, "Interrupt with no reply in progress"
                self.reply = 0
            elif isinstance(effect, PauseOutput):
                assert self.pausing, "PauseOutput although pause_while_undecided is off"
                assert not self.paused, "two PauseOutput in a row"
                self.paused = True
            elif isinstance(effect, ResumeOutput):
                assert self.paused, "ResumeOutput without PauseOutput"
                assert effect.reason in (
                    "interruption_accepted",
                    "not_an_interruption",
                    "reply_ended",
                )
                self.paused = False
        assert replies <= 1, f"{replies} replies at one end of turn"
        m = self.manager
        assert m is not None
        assert m.reply == self.reply
        assert (m.speculation[0] if m.speculation else 0) == self.held
        if self.paused:
            assert m.bot is Bot.HOLDING, "the output is left paused after the decision"

    def _number(self) -> int:
        number, self.next_turn = self.next_turn, self.next_turn + 1
        return number


WORDS = ["yeah", "uh huh", "okay", "book", "a", "table", "stop", "wait", "what", "about", "um"]
texts = st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join)
segments = st.fixed_dictionaries(
    {
        "gap": st.integers(0, 1500),  # after the previous VAD report
        "duration": st.integers(0, 1200),
        "vad_lag": st.integers(0, 300),
        "partials": st.lists(st.tuples(texts, st.integers(0, 3)), max_size=3),
        "final": st.none() | texts,  # None: it never comes
        "final_delay": st.integers(0, 2500),
        # the reply (or speculation, ...) ending while this segment is spoken: (offset, which)
        "reply_end": st.none() | st.tuples(st.integers(0, 600), st.integers(0, 3)),
    }
)
policies = st.fixed_dictionaries(
    {
        "speculate": st.booleans(),
        "speculate_on": st.sampled_from(["partial", "stable"]),
        "pause_while_undecided": st.booleans(),
        "interrupt_min_ms": st.sampled_from([0.0, 150.0, 300.0]),
        "interrupt_min_words": st.integers(0, 2),
        "match": st.sampled_from(["exact", "normalized", "words"]),
        "max_word_edits": st.integers(0, 1),
        "final_timeout_ms": st.sampled_from([0.0, 400.0, 1500.0]),
    }
)
Observation = tuple[str, Any, Any]


def timeline(
    segs: list[dict[str, Any]], ends: list[tuple[int, int]]
) -> list[tuple[int, Observation]]:
    """VAD segments with their partials, finals in order (maybe late or lost), reply ends."""
    events: list[tuple[int, int, Observation]] = []
    t = last_final = 0
    for seg in segs:
        start = t + seg["gap"]
        end = start + seg["duration"]
        reported = end + seg["vad_lag"]
        events.append((start, len(events), ("start", None, None)))
        for i, (text, n_stable) in enumerate(seg["partials"], 1):
            at = start + (reported - start) * i // (len(seg["partials"]) + 1)
            stable = " ".join(text.split()[:n_stable])
            events.append((at, len(events), ("partial", text, stable)))
        if seg["reply_end"] is not None:
            offset, which = seg["reply_end"]
            events.append((start + offset, len(events), ("reply_ended", which, None)))
        events.append((reported, len(events), ("end", end, None)))
        if seg["final"] is not None:
            last_final = max(last_final, reported + seg["final_delay"])
            events.append((last_final, len(events), ("final", seg["final"], None)))
        t = reported
    for at, which in ends:
        events.append((at, len(events), ("reply_ended", which, None)))
    return [(at, observation) for at, _, observation in sorted(events)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(  # the reply ends while a barge-in with words is undecided (found by this test)
    policy={
        "speculate": False,
        "speculate_on": "partial",
        "pause_while_undecided": True,
        "interrupt_min_ms": 300.0,
        "interrupt_min_words": 1,
        "match": "normalized",
        "max_word_edits": 0,
        "final_timeout_ms": 1500.0,
    },
    probability=None,
    segs=[
        {
            "gap": 0,
            "duration": 300,
            "vad_lag": 0,
            "partials": [],
            "final": "book a table",
            "final_delay": 0,
            "reply_end": None,
        },
        {
            "gap": 700,
            "duration": 400,
            "vad_lag": 0,
            "partials": [("wait stop", 0)],  # at 1200 ms: too early to decide
            "final": "wait stop",
            "final_delay": 0,
            "reply_end": (250, 0),  # at 1250 ms; the barge-in timer was due at 1300 ms
        },
    ],
    ends=[],
)
@given(
    policy=policies,
    probability=st.sampled_from([None, 0.1, 0.9]),
    segs=st.lists(segments, min_size=1, max_size=6),
    ends=st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 3)), max_size=4),
)
def test_random_conversations_keep_the_invariants(
    policy: dict[str, Any],
    probability: float | None,
    segs: list[dict[str, Any]],
    ends: list[tuple[int, int]],
) -> None:
    invariants = Invariants(policy)
    call = Call(None if probability is None else lambda _text: probability, **policy)
    call.watch = invariants
    invariants.manager = m = call.manager
    for at, (kind, a, b) in timeline(segs, ends):
        if kind == "start":
            call.start(at)
        elif kind == "partial":
            call.partial(at, a, b)
        elif kind == "end":
            call.end(at, ended=a)
        elif kind == "final":
            call.final(at, a)
        else:  # the reply in progress, the speculation, the latest number, or none
            call.until(at)
            speculation = m.speculation[0] if m.speculation else 0
            call.reply_ended(at, [m.reply, speculation, call.next_turn - 1, 0][a])
    call.settle()
    # every segment ended: no turn and no barge-in is left hanging without a timer
    assert m.user is User.IDLE, f"the user's turn hangs in {m.user}"
    assert m.bot is not Bot.HOLDING, "a barge-in was never decided"
    assert not invariants.paused


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=policies,
    segs=st.lists(segments, min_size=1, max_size=5),
    ends=st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 3)), max_size=3),
    cut=st.floats(0.0, 1.0),
)
def test_a_manager_restored_at_any_point_decides_exactly_like_the_original(
    policy: dict[str, Any],
    segs: list[dict[str, Any]],
    ends: list[tuple[int, int]],
    cut: float,
) -> None:
    observations = timeline(segs, ends)
    split = round(cut * len(observations))
    call = Call(**policy)
    for at, observation in observations[:split]:
        _play(call, at, observation)
    moved = _moved(call, **policy)
    before = len(call.log)
    for c in (call, moved):
        for at, observation in observations[split:]:
            _play(c, at, observation)
        c.settle()
    assert moved.log == call.log[before:]
    assert moved.manager.snapshot() == call.manager.snapshot()


def _play(call: Call, at: int, observation: Observation) -> None:
    kind, a, b = observation
    m = call.manager
    if kind == "start":
        call.start(at)
    elif kind == "partial":
        call.partial(at, a, b)
    elif kind == "end":
        call.end(at, ended=a)
    elif kind == "final":
        call.final(at, a)
    else:
        call.until(at)
        speculation = m.speculation[0] if m.speculation else 0
        call.reply_ended(at, [m.reply, speculation, call.next_turn - 1, 0][a])


# -- typed turns ----------------------------------------------------------------------------


def _typed(call: Call, ms: float, text: str) -> list[Effect]:
    call.until(ms)
    return call._observed("text", 0, lambda: call.manager.text(call.now, text))


def test_a_typed_turn_commits_at_once_with_its_text() -> None:
    call = Call()
    assert _typed(call, 100, "What's the weather?") == [Commit("What's the weather?")]
    assert call.manager.bot is Bot.SPEAKING and call.manager.reply == 1
    assert call.manager.deadline is None


def test_a_typed_turn_over_a_reply_interrupts_it_and_becomes_the_next_turn() -> None:
    call = bot_speaking()
    effects = _typed(call, 1500, "no")  # one short word: typed, it is no backchannel
    assert effects == [Interrupt(), Commit("no")]
    assert call.manager.reply == 2


def test_a_typed_turn_during_speech_drops_the_spoken_finals_still_to_come() -> None:
    call = Call()
    call.start(0)
    call.partial(200, "hello")
    assert _typed(call, 300, "Cancel my order") == [Commit("Cancel my order")]
    call.end(500)
    assert call.final(550, "hello there") == []
    call.settle()
    assert [e for e in call.effects if isinstance(e, Commit)] == [Commit("Cancel my order")]


def test_an_empty_typed_turn_does_nothing() -> None:
    call = Call()
    assert _typed(call, 100, "   ") == []
    assert call.manager.bot is Bot.SILENT
