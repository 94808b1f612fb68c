"""Turn-taking: the turn manager and its policy (end of turn, barge-in, speculation)."""

from rspp.dialog.manager import (
    Bot,
    Commit,
    Confirm,
    Discard,
    Effect,
    Interrupt,
    PauseOutput,
    ResumeOutput,
    Speculate,
    TurnManager,
    User,
)
from rspp.dialog.matching import is_backchannel, normalize, transcripts_match
from rspp.dialog.policy import TurnPolicy
from rspp.dialog.predictor import heuristic_end_of_turn, load_predictor

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
    "TurnPolicy",
    "User",
    "heuristic_end_of_turn",
    "is_backchannel",
    "load_predictor",
    "normalize",
    "transcripts_match",
]
