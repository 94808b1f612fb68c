"""The turn policy: defaults and validation (direct construction and from a spec's config)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from rspp.dialog.policy import DEFAULT_BACKCHANNELS, TurnPolicy


def test_defaults() -> None:
    policy = TurnPolicy()
    assert policy.silence_ms == 500.0
    assert policy.fast_silence_ms == 200.0
    assert policy.predictor_threshold == 0.8
    assert policy.final_timeout_ms == 1500.0
    assert policy.interrupt_min_ms == 300.0
    assert policy.interrupt_min_words == 1
    assert policy.backchannels == DEFAULT_BACKCHANNELS
    assert policy.pause_while_undecided is True
    assert policy.speculate is False
    assert policy.speculate_on == "partial"
    assert policy.match == "normalized"
    assert policy.max_word_edits == 0


def test_each_policy_has_its_own_backchannel_list() -> None:
    a, b = TurnPolicy(), TurnPolicy()
    a.backchannels.append("indeed")
    assert "indeed" not in b.backchannels
    assert "indeed" not in DEFAULT_BACKCHANNELS


def test_fast_silence_may_equal_but_not_exceed_silence() -> None:
    assert TurnPolicy(silence_ms=300.0, fast_silence_ms=300.0).fast_silence_ms == 300.0
    with pytest.raises(ValueError, match="fast_silence_ms"):
        TurnPolicy(silence_ms=300.0, fast_silence_ms=301.0)
    with pytest.raises(ValueError, match="fast_silence_ms"):
        TurnPolicy(silence_ms=100.0)  # the default fast_silence_ms (200) is now too long


@pytest.mark.parametrize("mode", ["partial", "stable"])
def test_speculate_on_modes(mode: str) -> None:
    assert TurnPolicy(speculate_on=mode).speculate_on == mode


@pytest.mark.parametrize("mode", ["final", "Stable", ""])
def test_a_bad_speculate_on_is_rejected(mode: str) -> None:
    with pytest.raises(ValueError, match="speculate_on"):
        TurnPolicy(speculate_on=mode)


def test_from_config() -> None:
    policy = msgspec.convert(
        {"silence_ms": 700, "speculate": True, "match": "words", "max_word_edits": 2},
        TurnPolicy,
    )
    assert policy.silence_ms == 700.0
    assert policy.speculate is True
    assert policy.match == "words"
    assert policy.max_word_edits == 2
    assert policy.interrupt_min_ms == 300.0


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"silence_msec": 700}, "unknown field"),
        ({"speculate_on": "final"}, "speculate_on"),
        ({"silence_ms": 300, "fast_silence_ms": 400}, "fast_silence_ms"),
        ({"silence_ms": -1}, "silence_ms"),
        ({"final_timeout_ms": 60_001}, "final_timeout_ms"),
        ({"predictor_threshold": 1.5}, "predictor_threshold"),
        ({"interrupt_min_words": -1}, "interrupt_min_words"),
        ({"max_word_edits": -1}, "max_word_edits"),
        ({"match": "fuzzy"}, "match"),
        ({"speculate": "maybe"}, "speculate"),
    ],
)
def test_bad_configs_are_validation_errors(config: dict[str, Any], complaint: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=complaint):
        msgspec.convert(config, TurnPolicy)


def test_a_policy_round_trips_through_a_spec() -> None:
    policy = TurnPolicy(silence_ms=800.0, speculate=True, backchannels=["ja"])
    assert msgspec.convert(msgspec.to_builtins(policy), TurnPolicy) == policy
