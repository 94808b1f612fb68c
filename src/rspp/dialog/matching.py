"""Comparing transcripts: normalisation, backchannels, and the speculation match rule."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

__all__ = ["MatchMode", "is_backchannel", "normalize", "transcripts_match", "word_edits"]

MatchMode = Literal["exact", "normalized", "words"]

_NOT_WORD = re.compile(r"[^\w\s']")


def normalize(text: str) -> str:
    """Lower case, punctuation (but apostrophes) dropped, single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def word_edits(a: str, b: str) -> int:
    """Word-level edit distance (insertions, deletions, substitutions) of two normalised texts."""
    x, y = a.split(), b.split()
    previous = list(range(len(y) + 1))
    for i, word in enumerate(x, 1):
        current = [i]
        for j, other in enumerate(y, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
            )
        previous = current
    return previous[-1]


def transcripts_match(
    speculated: str, final: str, mode: MatchMode, max_word_edits: int = 0
) -> bool:
    """Whether a speculation started on ``speculated`` answers the final transcript.

    ``exact``: the same text (surrounding space ignored). ``normalized``: the same
    words, ignoring case and punctuation (what a language model would mostly answer
    the same way). ``words``: at most ``max_word_edits`` word edits apart after
    normalisation.
    """
    if mode == "exact":
        return speculated.strip() == final.strip()
    a, b = normalize(speculated), normalize(final)
    if mode == "normalized":
        return a == b
    return word_edits(a, b) <= max_word_edits


def is_backchannel(text: str, backchannels: Iterable[str]) -> bool:
    """Whether ``text`` is only an acknowledgement ("uh-huh", "yeah", "okay right")."""
    words = normalize(text)
    if not words:
        return True
    known = {normalize(b) for b in backchannels}
    if words in known:
        return True
    # Short runs of acknowledgements ("yeah yeah", "okay right") are backchannels too.
    single = {k for k in known if " " not in k}
    return all(w in single for w in words.split()) and len(words.split()) <= 3
