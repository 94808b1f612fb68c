"""Transcript matching (normalize, word edits, the match rule, backchannels) and predictors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rspp.dialog.matching import is_backchannel, normalize, transcripts_match, word_edits
from rspp.dialog.policy import DEFAULT_BACKCHANNELS
from rspp.dialog.predictor import heuristic_end_of_turn, load_predictor

# -- normalize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  many   spaces\tand\nlines  ", "many spaces and lines"),
        ("Don't STOP.", "don't stop"),
        ("uh-huh", "uh huh"),
        ("Mm-hmm...", "mm hmm"),
        ("It costs $5.99!", "it costs 5 99"),
        ("Café ÉTÉ", "café été"),
        ("snake_case", "snake_case"),
        ("?!.,;:", ""),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@given(st.text(max_size=40))
@settings(max_examples=100)
def test_normalize_is_idempotent_and_single_spaced(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip()
    assert "  " not in once


# -- word_edits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "edits"),
    [
        ("", "", 0),
        ("book a table", "book a table", 0),
        ("book a table", "book the table", 1),  # substitution
        ("book a table", "book table", 1),  # deletion
        ("book a table", "book a big table", 1),  # insertion
        ("a b", "b a", 2),
        ("", "book a table", 3),
        ("book a table", "", 3),
        ("one two three", "four five six", 3),
        ("a  b", "a b", 0),  # words, not characters
    ],
)
def test_word_edits(a: str, b: str, edits: int) -> None:
    assert word_edits(a, b) == edits


small_texts = st.lists(st.sampled_from(["a", "b", "c", "book"]), max_size=5).map(" ".join)


@given(small_texts, small_texts, small_texts)
@settings(max_examples=200)
def test_word_edits_is_a_metric(a: str, b: str, c: str) -> None:
    assert word_edits(a, b) == word_edits(b, a)
    assert (word_edits(a, b) == 0) == (a.split() == b.split())
    assert word_edits(a, c) <= word_edits(a, b) + word_edits(b, c)
    assert abs(len(a.split()) - len(b.split())) <= word_edits(a, b)
    assert word_edits(a, b) <= max(len(a.split()), len(b.split()))


# -- transcripts_match ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speculated", "final", "mode", "max_edits", "expected"),
    [
        ("book a table", "book a table", "exact", 0, True),
        (" book a table ", "book a table", "exact", 0, True),
        ("book a table", "Book a table", "exact", 0, False),
        ("book a table", "book a table.", "exact", 0, False),
        ("book a table", "Book a table.", "normalized", 0, True),
        ("book a table", "book  a,  table", "normalized", 0, True),
        ("book a table", "book a cable", "normalized", 0, False),
        ("book a table", "book a table please", "normalized", 0, False),
        ("book a table", "Book a table!", "words", 0, True),
        ("book a table", "book the table", "words", 0, False),
        ("book a table", "book the table", "words", 1, True),
        ("book a table", "Book the table, please.", "words", 1, False),
        ("book a table", "Book the table, please.", "words", 2, True),
        ("", "", "words", 0, True),
        ("", "hi", "words", 0, False),
        ("", "hi", "words", 1, True),
    ],
)
def test_transcripts_match(
    speculated: str, final: str, mode: str, max_edits: int, expected: bool
) -> None:
    assert transcripts_match(speculated, final, mode, max_edits) is expected  # type: ignore[arg-type]


@given(small_texts, small_texts)
@settings(max_examples=100)
def test_words_mode_with_no_edits_is_normalized_mode(a: str, b: str) -> None:
    assert transcripts_match(a, b, "words", 0) == transcripts_match(a, b, "normalized")


# -- is_backchannel -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "yeah",
        "Yeah.",
        "uh-huh",
        "Uh huh!",
        "mm-hmm",
        "I see.",
        "got it",
        "OK",
        "yeah okay",
        "Okay, right.",
        "yeah yeah yeah",
        "okay right sure",
    ],
)
def test_acknowledgements_are_backchannels(text: str) -> None:
    assert is_backchannel(text, DEFAULT_BACKCHANNELS)


@pytest.mark.parametrize(
    "text",
    [
        "stop",
        "wait a second",
        "yeah but wait",
        "no",
        "what",
        "yeah yeah yeah yeah",  # a run of four is not a short acknowledgement any more
        "okay right sure yes",
        "book a table",
    ],
)
def test_sentences_are_not_backchannels(text: str) -> None:
    assert not is_backchannel(text, DEFAULT_BACKCHANNELS)


def test_a_run_is_made_of_single_word_backchannels_only() -> None:
    assert is_backchannel("uh huh", DEFAULT_BACKCHANNELS)  # known as a whole
    assert not is_backchannel("yeah I see", DEFAULT_BACKCHANNELS)  # "i" is no acknowledgement
    assert not is_backchannel("got it yeah", DEFAULT_BACKCHANNELS)


@pytest.mark.parametrize("text", ["", "   ", "...", "?!"])
def test_nothing_said_counts_as_a_backchannel(text: str) -> None:
    assert is_backchannel(text, DEFAULT_BACKCHANNELS)


def test_custom_backchannels_are_normalised_too() -> None:
    custom = ["Ja", "Genau!", "Alles klar"]
    assert is_backchannel("ja", custom)
    assert is_backchannel("genau", custom)
    assert is_backchannel("Alles klar.", custom)
    assert is_backchannel("ja genau ja", custom)
    assert not is_backchannel("yeah", custom)
    assert not is_backchannel("ja alles klar", custom)  # a run only of single words
    assert not is_backchannel("hello", [])
    assert is_backchannel("", [])


# -- predictors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transcript", "probability"),
    [
        ("", 0.0),
        ("   ", 0.0),
        ("What time is it?", 0.9),
        ("Stop!", 0.9),
        ("I want a pizza.", 0.9),
        ("what time is it?  ", 0.9),
        ("I want to", 0.1),
        ("I want to,", 0.1),
        ("book a table and", 0.1),
        ("Um", 0.1),
        ("book a table", 0.5),
        ("Hello, world", 0.5),
    ],
)
def test_heuristic_end_of_turn(transcript: str, probability: float) -> None:
    assert heuristic_end_of_turn(transcript) == probability


def test_load_predictor_by_name() -> None:
    assert load_predictor(None) is None
    assert load_predictor("") is None
    assert load_predictor("heuristic") is heuristic_end_of_turn
    assert load_predictor("rspp.dialog.predictor:heuristic_end_of_turn") is heuristic_end_of_turn
    assert load_predictor("rspp.dialog.matching:normalize") is normalize


def test_load_predictor_without_a_callable_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected 'heuristic'"):
        load_predictor("rspp.dialog.predictor")
    with pytest.raises(ValueError):
        load_predictor("heuristics")


def test_load_predictor_of_a_missing_module_is_an_import_error() -> None:
    with pytest.raises(ImportError):
        load_predictor("rspp.no_such_module_here:predict")


def test_load_predictor_of_something_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not callable"):
        load_predictor("rspp.dialog.policy:DEFAULT_BACKCHANNELS")


def test_load_predictor_of_a_missing_attribute_raises() -> None:
    with pytest.raises(AttributeError):
        load_predictor("rspp.dialog.predictor:no_such_predictor")
