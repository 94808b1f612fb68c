"""The turn-taking policy: every knob of the turn manager, validated when a pipeline is built."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from rspp.dialog.matching import MatchMode
from rspp.kernel.node import NodeConfig

__all__ = ["DEFAULT_BACKCHANNELS", "TurnPolicy"]

Ms = Annotated[float, Meta(ge=0.0, le=60_000.0)]

DEFAULT_BACKCHANNELS = [
    "yeah", "yes", "yep", "yup", "uh huh", "mm hmm", "mhm", "mm", "hmm", "okay", "ok",
    "right", "sure", "i see", "got it", "oh", "ah", "uh", "um", "cool", "nice", "great",
]  # fmt: skip


class TurnPolicy(NodeConfig, kw_only=True):
    """When a user's turn ends, when a barge-in counts, and whether to speculate."""

    # -- end of turn ----------------------------------------------------------------------
    #: Silence after the end of speech before the user's turn ends.
    silence_ms: Ms = 500.0
    #: The shorter silence used when the end-of-turn predictor is confident.
    fast_silence_ms: Ms = 200.0
    #: Predictor probability at or above which ``fast_silence_ms`` applies.
    predictor_threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.8
    #: Longest wait for the ASR final once the silence is over (then the last partial is used).
    final_timeout_ms: Ms = 1500.0

    # -- interruptions ---------------------------------------------------------------------
    #: Speech while the bot talks must last this long to interrupt it ...
    interrupt_min_ms: Ms = 300.0
    #: ... and contain this many words (0: duration alone decides) ...
    interrupt_min_words: Annotated[int, Meta(ge=0)] = 1
    #: ... and not be only an acknowledgement like these.
    backchannels: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_BACKCHANNELS))
    #: Pause the bot's audio while an interruption is undecided (resumed if it was not one).
    pause_while_undecided: bool = True

    # -- speculation -----------------------------------------------------------------------
    #: Start the reply on the transcript so far when the user pauses, before the turn ends.
    speculate: bool = False
    #: What to speculate on: the whole partial hypothesis, or only its stable prefix.
    speculate_on: str = "partial"
    #: How a speculation's transcript is compared with the final one at the end of the turn.
    match: MatchMode = "normalized"
    #: For ``match = "words"``: word edits tolerated.
    max_word_edits: Annotated[int, Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        if self.speculate_on not in ("partial", "stable"):
            raise ValueError("speculate_on must be 'partial' or 'stable'")
        if self.fast_silence_ms > self.silence_ms:
            raise ValueError("fast_silence_ms must not exceed silence_ms")
