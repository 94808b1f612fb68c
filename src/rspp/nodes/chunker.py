"""Cutting streamed LLM text into pieces a TTS can start on.

A TTS needs a whole phrase to sound natural, but waiting for the whole reply
wastes the LLM's head start. The chunker releases text as soon as a boundary
is certain: the end of a sentence (``.``, ``!``, ``?``, newline) -- or, in
``clause`` mode, also ``,``, ``;``, ``:`` and dashes -- once the piece is at
least ``min_chars`` long. A boundary is certain only when the character after
the punctuation has arrived and is whitespace, so ``3.5`` and ``e.g.`` inside a
sentence never cut it; a few abbreviations (``Mr.``, ``Dr.``, ...) are not
sentence ends. ``full`` mode releases nothing before :meth:`flush`, which is
how a sequential pipeline behaves. Pieces keep their whitespace: joined, they
are exactly the text pushed.

The first piece decides the time to first audio, so ``first_max_words`` can
release it early: after that many words, at a word boundary, even without
punctuation (a little prosody traded for latency on the first words only).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["ChunkMode", "TextChunker"]

ChunkMode = Literal["sentence", "clause", "full"]

_SENTENCE_END = frozenset(".!?\n\u2026\u3002\uff01\uff1f")  # and ellipsis, CJK full stops
_CLAUSE_END = frozenset(",;:\u2014\u2013")  # and em/en dashes
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx"}
)
_LAST_WORD = re.compile(r"(\S+)$")


class TextChunker:
    """Incremental text chunker; see the module docstring."""

    __slots__ = (
        "_buffer",
        "_first",
        "_held",
        "_scan",
        "first_max_words",
        "max_chars",
        "min_chars",
        "mode",
    )

    def __init__(
        self,
        mode: ChunkMode = "sentence",
        *,
        min_chars: int = 1,
        max_chars: int = 300,
        first_max_words: int = 0,
    ):
        if min_chars < 1 or max_chars < min_chars or first_max_words < 0:
            raise ValueError("need 1 <= min_chars <= max_chars and first_max_words >= 0")
        self.mode = mode
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.first_max_words = first_max_words
        self._buffer = ""
        self._held: list[str] = []  # ``full`` mode: the whole reply, joined once at the end
        self._scan = 0  # where to resume looking for a boundary
        self._first = True  # nothing released yet

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces that are now complete."""
        if self.mode == "full":
            self._held.append(text)  # no boundary is looked for: no string to grow
            return []
        self._buffer += text  # up to one piece (``max_chars``): linear in the reply
        pieces: list[str] = []
        while (cut := self._next_cut()) is not None:
            pieces.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            self._scan = 0
            self._first = False
        return pieces

    def flush(self) -> str:
        """Everything not yet released (the end of the reply)."""
        rest, self._buffer, self._scan = self.pending, "", 0
        self._held = []
        self._first = True  # the chunker may serve the next reply
        return rest

    @property
    def pending(self) -> str:
        """Text pushed but not yet released."""
        return self._buffer + "".join(self._held) if self._held else self._buffer

    @property
    def started(self) -> bool:
        """Whether a piece of the current reply has been released."""
        return not self._first

    def resume(self, pending: str, *, started: bool) -> None:
        """Take back the state of a chunker that was moved (``pending``, ``started``)."""
        self._buffer, self._scan, self._first = pending, 0, not started
        self._held = []
        if self.mode == "full":
            self._buffer, self._held = "", [pending] if pending else []

    def _next_cut(self) -> int | None:
        buf = self._buffer
        ends = _SENTENCE_END if self.mode == "sentence" else _SENTENCE_END | _CLAUSE_END
        i = self._scan
        while i < len(buf) - 1:
            ch = buf[i]
            if (
                ch in ends
                and (ch == "\n" or buf[i + 1].isspace())
                and i + 1 >= self.min_chars
                and not (ch == "." and self._is_abbreviation(buf, i))
            ):
                j = i + 1
                while j < len(buf) and buf[j].isspace():
                    j += 1
                return j
            i += 1
        self._scan = max(0, len(buf) - 1)
        if self._first and self.first_max_words:
            words = buf.split(" ")
            # Enough whole words, and the next one has begun (the last is complete).
            if len(words) > self.first_max_words and len(words[0]) > 0:
                cut = len(" ".join(words[: self.first_max_words])) + 1
                if cut >= self.min_chars:
                    return cut
        if len(buf) > self.max_chars:
            # No boundary in sight: cut at the last space before the limit.
            space = buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None

    @staticmethod
    def _is_abbreviation(buf: str, dot: int) -> bool:
        match = _LAST_WORD.search(buf, 0, dot)
        return match is not None and match.group(1).lower() in _ABBREVIATIONS
