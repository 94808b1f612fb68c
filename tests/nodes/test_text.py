"""spread_words: text cut at word boundaries into balanced parts that join back exactly."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from rspp.nodes.text import spread_words

# Words, spaces, tabs and newlines in any mix (leading, trailing, repeated).
_PIECES = st.sampled_from(["a", "bc", "déjà", "x.", "!", " ", "  ", "\t", "\n", "\r\n", "\u00a0"])
TEXTS = st.one_of(st.lists(_PIECES, max_size=40).map("".join), st.text(max_size=200))
PARTS = st.integers(min_value=1, max_value=50)


def _word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every whitespace-separated word in ``text``."""
    spans = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        spans.append((i, j))
        i = j
    return spans


@given(TEXTS, PARTS)
@example("  leading and trailing  ", 3)
@example("\n\nnew\nlines\n\n", 2)
@example("", 5)
@example("   ", 4)
def test_parts_join_back_exactly(text: str, parts: int) -> None:
    out = spread_words(text, parts)
    assert len(out) == parts
    assert "".join(out) == text


@given(TEXTS, PARTS)
@example("one two three four five", 2)
@example(" a  b\tc\nd ", 3)
def test_words_are_never_split(text: str, parts: int) -> None:
    out = spread_words(text, parts)
    # Part boundaries (offsets into text) must never fall strictly inside a word.
    cuts = set()
    offset = 0
    for piece in out[:-1]:
        offset += len(piece)
        cuts.add(offset)
    for start, end in _word_spans(text):
        inside = {c for c in cuts if start < c < end}
        assert not inside, f"word {text[start:end]!r} split at {sorted(inside)}"
    # Equivalently: the words of the parts, concatenated, are the words of the text.
    assert [w for piece in out for w in piece.split()] == text.split()


@given(TEXTS, PARTS)
@example("  a b c", 3)
@example(" w1 w2 w3 w4 w5 w6 ", 4)
@example("\nx y\n", 2)
def test_parts_are_balanced(text: str, parts: int) -> None:
    words = len(text.split())
    out = spread_words(text, parts)
    counts = [len(piece.split()) for piece in out]
    assert sum(counts) == words
    if words >= parts:
        assert max(counts) - min(counts) <= 1, (text, parts, out)
        assert min(counts) >= 1


def test_more_parts_than_words_gives_empty_parts() -> None:
    out = spread_words("a b", 5)
    assert len(out) == 5
    assert "".join(out) == "a b"
    assert out.count("") == 3
    assert sorted(p.strip() for p in out if p) == ["a", "b"]


def test_one_part_is_the_whole_text() -> None:
    assert spread_words("  as is \n", 1) == ["  as is \n"]


def test_empty_text_gives_empty_parts() -> None:
    assert spread_words("", 3) == ["", "", ""]


def test_even_split_of_a_sentence() -> None:
    assert spread_words("one two three four", 2) == ["one two ", "three four"]


def test_exhaustively_for_small_sizes() -> None:
    for n_words in range(31):
        for lead in ("", " ", "\n\n"):
            for tail in ("", " ", "\t\n"):
                text = lead + " ".join(f"w{i}" for i in range(n_words)) + tail
                for parts in range(1, 51):
                    out = spread_words(text, parts)
                    assert "".join(out) == text
                    assert [w for p in out for w in p.split()] == text.split()
                    counts = [len(p.split()) for p in out]
                    if n_words >= parts:
                        assert max(counts) - min(counts) <= 1, (text, parts, out)
