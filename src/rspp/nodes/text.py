"""Small text helpers shared by nodes that align text with audio."""

from __future__ import annotations

import re

__all__ = ["spread_words"]

_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


def spread_words(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` pieces at word boundaries, words spread evenly.

    The words are spread over the parts as if each took the same time, and each
    word goes to the part in which it *ends*: a part's text is the words whose
    audio is complete once that part has played. Joining the pieces gives
    ``text`` back exactly, so the text of the audio frames that were played is
    the text the user heard, to word precision -- never a word cut off halfway.
    """
    if parts <= 1:
        return [text]
    words = [w for w in _WORD_BOUNDARY.split(text) if w]
    if len(words) > 1 and words[0].isspace():  # leading whitespace belongs to the first word
        words[:2] = [words[0] + words[1]]
    out = [""] * parts
    n = len(words)
    for i, word in enumerate(words):
        out[((i + 1) * parts - 1) // n] += word
    return out
