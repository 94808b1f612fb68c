"""The turn manager: when the user's turn ends, whether a barge-in is real, when to speculate.

Everything that decides the *conversation's* turn-taking lives here; the
kernel's turn machine (``rspp.kernel.turns``) only enforces the consequences.
This file does no I/O and knows no clock: it is fed observations with the time
they happened (speech started or ended, a partial or final transcript, a
deadline reached, a reply started or ended) and returns *effects* -- commit,
speculate, confirm, discard, interrupt, pause/resume the output -- for its
shell (``rspp.nodes.turn_manager``) to emit. It asks for at most one timer:
:attr:`TurnManager.deadline`.

Theory of operation
-------------------
Two variables describe the conversation. ``user``: IDLE (not in a turn),
SPEAKING, PAUSED (speech ended; the silence window runs), AWAIT_FINAL (the
window is over but the ASR final of the last speech segment has not come).
``bot``: SILENT, SPEAKING (a committed reply is being generated or played),
HOLDING (the user started talking over it and it is not yet decided whether
that is an interruption: the output is paused).

==============  ===========  ==========================================================
when            bot          what happens
==============  ===========  ==========================================================
speech starts   SILENT       user SPEAKING (a continuing turn discards its speculation)
speech starts   SPEAKING     bot HOLDING: pause the output; a barge-in check is due
                             after ``interrupt_min_ms``
speech ends     SILENT       user PAUSED; the turn ends ``silence_ms`` after speech
                             ended (``fast_silence_ms`` if the end-of-turn predictor is
                             confident); speculate on the transcript so far
speech ends     HOLDING      shorter than ``interrupt_min_ms``, or only a backchannel
                             so far: not an interruption, resume; enough words:
                             interrupt; no words yet: the final transcript decides
partial/final   HOLDING      long enough, ``interrupt_min_words`` words, not a
                             backchannel: INTERRUPT (the kernel cuts the reply), resume
                             the output and go on with the user's new turn; a
                             backchannel or too short: resume, drop the utterance
final           SILENT       the segment joins the turn's transcript; if it differs
                             from what was speculated on, speculate again
deadline        SILENT       end of turn: a speculation on the same words (per
                             ``match``) is CONFIRMed -- its reply is already there --
                             otherwise COMMIT the transcript (the kernel drops a
                             speculation that missed); no final yet: AWAIT_FINAL, at
                             most ``final_timeout_ms``, then the last partial is used
reply ends      any          bot SILENT (an undecided barge-in becomes a user turn)
==============  ===========  ==========================================================

Each speech segment is expected to produce exactly one ASR final, in order;
finals of utterances that were dismissed as backchannels are dropped.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import msgspec

from rspp.dialog.matching import is_backchannel, normalize, transcripts_match
from rspp.dialog.policy import TurnPolicy
from rspp.dialog.predictor import EndOfTurnPredictor

__all__ = [
    "Bot",
    "Commit",
    "Confirm",
    "Discard",
    "Effect",
    "Interrupt",
    "PauseOutput",
    "ResumeOutput",
    "Speculate",
    "TurnManager",
    "User",
]


class User(enum.Enum):
    IDLE = "idle"
    SPEAKING = "speaking"
    PAUSED = "paused"
    AWAIT_FINAL = "await_final"


class Bot(enum.Enum):
    SILENT = "silent"
    SPEAKING = "speaking"
    HOLDING = "holding"


# -- effects --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Commit:
    """End the user's turn: reply to ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class Speculate:
    """Start a reply to ``text`` now, held back until confirmed."""

    text: str


@dataclass(frozen=True, slots=True)
class Confirm:
    """The speculation ``turn`` is the reply: release it."""

    turn: int


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop the speculation ``turn`` (the user kept talking)."""

    turn: int


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The user really is interrupting the bot."""


@dataclass(frozen=True, slots=True)
class PauseOutput:
    """Stop the bot's audio where it is, keeping it."""


@dataclass(frozen=True, slots=True)
class ResumeOutput:
    """Play the bot's audio again from where it paused (``reason``: why)."""

    reason: str = ""


Effect = Commit | Speculate | Confirm | Discard | Interrupt | PauseOutput | ResumeOutput


class SegmentSnapshot(msgspec.Struct, array_like=True):
    """A speech segment waiting for its final, in a snapshot."""

    keep: bool
    partial: str
    stable: str


class ManagerSnapshot(msgspec.Struct, kw_only=True):
    """The manager's whole state, for moving a session at any instant.

    Times (``deadline``, ``speech_end``, ``barge_start``) are session time, which
    carries across a move, so a restored manager decides exactly as it would have.
    """

    user: str
    bot: str
    reply: int
    segments: list[str]
    speculation_turn: int = 0
    speculation_text: str = ""
    deadline: int | None = None
    deadline_kind: str = ""
    pending: list[SegmentSnapshot] = msgspec.field(default_factory=list)
    speech_end: int = 0
    spec_text: str = ""
    paused: bool = False
    barge_start: int = 0


class _Segment:
    """A speech segment waiting for its final: whether to keep it, and what partials said."""

    __slots__ = ("keep", "partial", "stable")

    def __init__(self, keep: bool = True, partial: str = "", stable: str = "") -> None:
        self.keep = keep
        self.partial = partial
        self.stable = stable


class TurnManager:
    """Pure turn-taking logic. See the module docstring."""

    def __init__(self, policy: TurnPolicy, predictor: EndOfTurnPredictor | None = None) -> None:
        self.policy = policy
        self.predictor = predictor
        self.user = User.IDLE
        self.bot = Bot.SILENT
        #: The committed reply in progress (0: none).
        self.reply = 0
        #: The speculation in flight: (turn, the text it answers), or None.
        self.speculation: tuple[int, str] | None = None
        #: When the manager wants :meth:`timeout` called (session clock, ns), or None.
        self.deadline: int | None = None
        self._deadline_kind = ""
        self._segments: list[str] = []  # finals of the user's turn so far
        self._pending: deque[_Segment] = deque()  # segments awaiting their final, oldest first
        self._speech_end = 0
        self._spec_text = ""  # text of a Speculate effect not yet acknowledged
        self._paused = False
        self._barge_start = 0

    # -- observations ------------------------------------------------------------------------

    def speech_start(self, now: int) -> list[Effect]:
        """The VAD heard speech start at ``now``."""
        effects: list[Effect] = []
        self._pending.append(_Segment())
        if self.bot is Bot.SPEAKING:
            self.bot = Bot.HOLDING
            self._barge_start = now
            if self.policy.pause_while_undecided:
                self._paused = True
                effects.append(PauseOutput())
            self.user = User.SPEAKING
            self._segments = []
            self._set_deadline(now + _ns(self.policy.interrupt_min_ms), "barge")
            effects += self._check_barge(now, "")
            return effects
        if self.bot is Bot.SILENT and self.user in (User.PAUSED, User.AWAIT_FINAL):
            effects += self._discard_speculation()  # the user is not done after all
        if self.user is User.IDLE:
            self._segments = []
        self.user = User.SPEAKING
        # SILENT: the silence window stops. HOLDING: the words to come decide, not a timeout.
        self._clear_deadline()
        return effects

    def speech_end(self, now: int, ended_at: int) -> list[Effect]:
        """The VAD decided at ``now`` that speech ended at ``ended_at``."""
        if self.user is not User.SPEAKING:
            return []
        self.user = User.PAUSED
        self._speech_end = ended_at
        if self.bot is Bot.HOLDING:
            policy = self.policy
            if ended_at - self._barge_start < _ns(policy.interrupt_min_ms):
                return self._reject_barge()
            heard = self._heard()
            if (
                policy.interrupt_min_words
                and heard.strip()
                and is_backchannel(heard, policy.backchannels)
            ):
                return self._reject_barge()  # "uh-huh" will not become a sentence
            effects = self._check_barge(now, heard)
            if not effects:  # no words yet: the final transcript decides
                self._set_deadline(now + _ns(policy.final_timeout_ms), "barge_final")
            return effects
        if self.bot is Bot.SILENT:
            self._set_endpoint(self._hypothesis())
            return self._speculate()
        return []

    def partial(self, now: int, text: str, stable: str) -> list[Effect]:
        """An interim transcript of the segment being spoken."""
        if not self._pending:
            return []
        segment = self._pending[-1]
        segment.partial, segment.stable = text, stable
        if self.bot is Bot.HOLDING:
            return self._check_barge(now, self._heard())
        return []

    def final(self, now: int, text: str) -> list[Effect]:
        """The final transcript of the oldest segment still waiting for one."""
        if not self._pending or not self._pending.popleft().keep:
            return []  # unexpected, or the final of a dismissed utterance
        if text.strip():
            self._segments.append(text)
        if self.bot is Bot.HOLDING:
            if self.user is User.SPEAKING or self._pending:
                return []  # an earlier segment of a barge-in still being decided
            return self._decide_barge_on_final(now)
        if self.bot is not Bot.SILENT:
            return []
        if self.user is User.AWAIT_FINAL and not self._pending:
            return self._end_of_turn(now)
        if self.user is User.PAUSED:
            self._set_endpoint(self._hypothesis(), shorten_only=True)
            if self.deadline is not None and now >= self.deadline and not self._pending:
                return self._end_of_turn(now)
            return self._speculate()
        return []

    def text(self, now: int, text: str) -> list[Effect]:
        """A typed user turn: complete as it is, so it ends the user's turn at once.

        Over a reply in progress it is an accepted interruption (typing over the
        bot is no backchannel). Finals of speech still being recognised are
        dropped: the typed text is the turn.
        """
        if not text.strip():
            return []
        effects = self._accept_barge() if self.bot is not Bot.SILENT else []
        for segment in self._pending:
            segment.keep = False
        self._segments.append(text)
        return effects + self._end_of_turn(now)

    def timeout(self, now: int) -> list[Effect]:
        """Time passed; act if the deadline is reached."""
        if self.deadline is None or now < self.deadline:
            return []
        kind = self._deadline_kind
        self._clear_deadline()
        if kind == "barge":
            return self._check_barge(now, self._heard())
        if kind == "barge_final":
            return self._reject_barge()
        if kind == "endpoint":
            if self.bot is not Bot.SILENT or self.user is not User.PAUSED:
                return []
            if self._pending:
                self.user = User.AWAIT_FINAL
                self._set_deadline(now + _ns(self.policy.final_timeout_ms), "final")
                return []
            return self._end_of_turn(now)
        if kind == "final" and self.user is User.AWAIT_FINAL:
            # A final never came: go with what the recogniser last said, and drop the
            # late finals when they do come.
            for segment in self._pending:
                if segment.keep and segment.partial.strip():
                    self._segments.append(segment.partial)
                segment.keep = False
            return self._end_of_turn(now)
        return []

    # -- what the shell reports back ------------------------------------------------------

    def reply_started(self, turn: int, *, speculative: bool) -> None:
        """The kernel numbered the reply started by the last Commit or Speculate."""
        if speculative:
            self.speculation = (turn, self._spec_text)
        else:
            self.reply = turn

    def reply_ended(self, turn: int) -> list[Effect]:
        """Reply ``turn`` was played out, interrupted or dropped."""
        effects: list[Effect] = []
        if self.speculation is not None and self.speculation[0] == turn:
            self.speculation = None
        if turn != self.reply or turn == 0:
            return effects
        self.reply = 0
        if self.bot is Bot.HOLDING:
            # The bot stopped on its own while we were deciding: the speech is a user turn.
            effects += self._resume("reply_ended")
            self.bot = Bot.SILENT
            self._clear_deadline()  # no barge-in to decide any more
            if self.user is User.PAUSED:
                self._set_endpoint(self._hypothesis())
        else:
            self.bot = Bot.SILENT
        return effects

    # -- internals ------------------------------------------------------------------------

    def _hypothesis(self) -> str:
        """The transcript of the user's turn so far: finals, then what partials said since."""
        stable = self.policy.speculate_on == "stable"
        words = list(self._segments)
        words += [s.stable if stable else s.partial for s in self._pending if s.keep]
        return " ".join(w.strip() for w in words if w.strip())

    def _heard(self) -> str:
        """What the user has said since speech started over the bot (finals and partials)."""
        words = self._segments + [s.partial for s in self._pending if s.keep]
        return " ".join(w.strip() for w in words if w.strip())

    def _set_endpoint(self, transcript: str, *, shorten_only: bool = False) -> None:
        window = self.policy.silence_ms
        predictor = self.predictor
        if predictor is not None and transcript:
            window = self._window(predictor(transcript))
        deadline = self._speech_end + _ns(window)
        if shorten_only and self.deadline is not None and self._deadline_kind == "endpoint":
            deadline = min(deadline, self.deadline)
        self._set_deadline(deadline, "endpoint")

    def _window(self, done_probability: float) -> float:
        policy = self.policy
        if done_probability >= policy.predictor_threshold:
            return policy.fast_silence_ms
        return policy.silence_ms

    def _speculate(self) -> list[Effect]:
        if not self.policy.speculate or self.bot is not Bot.SILENT:
            return []
        text = self._hypothesis()
        if not text:
            return []
        if self.speculation is not None and normalize(self.speculation[1]) == normalize(text):
            return []
        self._spec_text = text
        return [Speculate(text)]

    def _discard_speculation(self) -> list[Effect]:
        if self.speculation is None:
            return []
        turn = self.speculation[0]
        self.speculation = None
        return [Discard(turn)]

    def _end_of_turn(self, now: int) -> list[Effect]:
        transcript = " ".join(s.strip() for s in self._segments if s.strip())
        self._segments = []
        self.user = User.IDLE
        self._clear_deadline()
        if not transcript:
            return self._discard_speculation()
        spec = self.speculation
        self.speculation = None
        self.bot = Bot.SPEAKING
        policy = self.policy
        if spec is not None and transcripts_match(
            spec[1], transcript, policy.match, policy.max_word_edits
        ):
            self.reply = spec[0]
            return [Confirm(spec[0])]
        return [Commit(transcript)]

    def _check_barge(self, now: int, text: str) -> list[Effect]:
        """Accept the barge-in if it is long enough, has enough words and is not a backchannel."""
        policy = self.policy
        if now - self._barge_start < _ns(policy.interrupt_min_ms):
            return []
        if policy.interrupt_min_words and (
            len(text.split()) < policy.interrupt_min_words
            or is_backchannel(text, policy.backchannels)
        ):
            return []
        return self._accept_barge()

    def _decide_barge_on_final(self, now: int) -> list[Effect]:
        """Speech ended long enough; the final transcripts settle it."""
        policy = self.policy
        text = " ".join(self._segments)
        words = len(text.split())
        if policy.interrupt_min_words and (
            words < policy.interrupt_min_words or is_backchannel(text, policy.backchannels)
        ):
            return self._reject_barge()
        effects = self._accept_barge()
        if self.user is User.PAUSED and not self._pending:
            self._set_endpoint(" ".join(self._segments))
            if self.deadline is not None and now >= self.deadline:
                effects += self._end_of_turn(now)
        return effects

    def _accept_barge(self) -> list[Effect]:
        self.bot = Bot.SILENT
        self.reply = 0
        self._clear_deadline()
        effects: list[Effect] = [Interrupt(), *self._resume("interruption_accepted")]
        if self.user is User.PAUSED:
            self._set_endpoint(self._hypothesis())
        return effects

    def _reject_barge(self) -> list[Effect]:
        """Not an interruption: the bot goes on; the utterance is forgotten."""
        self.bot = Bot.SPEAKING
        self.user = User.IDLE
        self._segments = []
        self._clear_deadline()
        for segment in self._pending:  # its finals, still to come, are dropped
            segment.keep = False
        return self._resume("not_an_interruption")

    def _resume(self, reason: str) -> list[Effect]:
        if not self._paused:
            return []
        self._paused = False
        return [ResumeOutput(reason)]

    def _set_deadline(self, at: int, kind: str) -> None:
        self.deadline, self._deadline_kind = at, kind

    def _clear_deadline(self) -> None:
        self.deadline, self._deadline_kind = None, ""

    # -- moving a session --------------------------------------------------------------------

    def snapshot(self) -> ManagerSnapshot:
        spec = self.speculation
        return ManagerSnapshot(
            user=self.user.value,
            bot=self.bot.value,
            reply=self.reply,
            segments=list(self._segments),
            speculation_turn=spec[0] if spec is not None else 0,
            speculation_text=spec[1] if spec is not None else "",
            deadline=self.deadline,
            deadline_kind=self._deadline_kind,
            pending=[SegmentSnapshot(s.keep, s.partial, s.stable) for s in self._pending],
            speech_end=self._speech_end,
            spec_text=self._spec_text,
            paused=self._paused,
            barge_start=self._barge_start,
        )

    def restore(self, snap: ManagerSnapshot) -> None:
        """Take a snapshot's state, whatever the instant it was taken at."""
        self.user, self.bot, self.reply = User(snap.user), Bot(snap.bot), snap.reply
        self._segments = list(snap.segments)
        self.speculation = (
            (snap.speculation_turn, snap.speculation_text) if snap.speculation_turn else None
        )
        self.deadline, self._deadline_kind = snap.deadline, snap.deadline_kind
        self._pending = deque(_Segment(p.keep, p.partial, p.stable) for p in snap.pending)
        self._speech_end = snap.speech_end
        self._spec_text = snap.spec_text
        self._paused = snap.paused
        self._barge_start = snap.barge_start


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)
