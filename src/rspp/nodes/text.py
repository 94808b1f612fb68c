"""Small text helpers shared by nodes that align text with audio."""

from __future__ import annotations

import re

__all__ = ["spread_words"]

_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


def spread_words(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` pieces at word boundaries, words spread evenly.

    Joining the pieces gives ``text`` back exactly, so the text of the audio
    frames that were delivered is the text the user heard (to word precision).
    """
    if parts <= 1:
        return [text]
    words = [w for w in _WORD_BOUNDARY.split(text) if w]
    out = [""] * parts
    n = len(words)
    for i, word in enumerate(words):
        out[i * parts // n] += word
    return out
