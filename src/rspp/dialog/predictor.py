"""End-of-turn predictors: a hook that says how likely the user has finished.

The turn manager ends a turn after ``silence_ms`` of silence, or after the
shorter ``fast_silence_ms`` when the predictor is confident the user is done.
A predictor is any callable ``(transcript) -> probability``; a spec names one
as ``"heuristic"`` or as ``"package.module:callable"`` (a model-based one,
for instance).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from rspp.dialog.matching import normalize

__all__ = ["EndOfTurnPredictor", "heuristic_end_of_turn", "load_predictor"]

EndOfTurnPredictor = Callable[[str], float]

#: Words a finished sentence rarely ends with: the user is probably still talking.
_HANGING = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "because", "but", "for", "from", "if", "in",
        "is", "my", "of", "on", "or", "so", "than", "that", "the", "then", "to", "uh",
        "um", "was", "were", "what", "when", "where", "which", "who", "will", "with",
        "would", "your",
    }
)  # fmt: skip


def heuristic_end_of_turn(transcript: str) -> float:
    """A cheap rule: a question or a sentence end means done; a dangling word means not."""
    text = transcript.strip()
    if not text:
        return 0.0
    if text[-1] in "?!.":
        return 0.9
    words = normalize(text).split()
    if words and words[-1] in _HANGING:
        return 0.1
    return 0.5


def load_predictor(name: str | None) -> EndOfTurnPredictor | None:
    """The predictor a spec names (None, ``"heuristic"`` or ``"module:callable"``)."""
    if not name:
        return None
    if name == "heuristic":
        return heuristic_end_of_turn
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"predictor {name!r}: expected 'heuristic' or 'package.module:callable'")
    predictor = getattr(importlib.import_module(module), attr)
    if not callable(predictor):
        raise TypeError(f"predictor {name!r} is not callable")
    return predictor  # type: ignore[no-any-return]
