"""Sans-IO bookkeeping: what reached the client (delivery) and where the time went (latency)."""

from __future__ import annotations

import pytest

from rspp.kernel.delivery import Delivered, DeliveryLedger
from rspp.kernel.latency import LatencyTracker, TurnLatency

MS = 1_000_000  # ns

# -- DeliveryLedger ---------------------------------------------------------------------


def test_ledger_sums_durations_and_concatenates_texts_per_turn() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(1, 20 * MS, "Hel")
    ledger.delivered(2, 20 * MS, "Other")
    ledger.delivered(1, 20 * MS, "")
    ledger.delivered(1, 15 * MS, "lo.")
    one = ledger.record(1)
    assert one == Delivered(1, 55 * MS, "Hello.")
    assert one.delivered_ms == pytest.approx(55.0)
    assert ledger.record(2) == Delivered(2, 20 * MS, "Other")


def test_ledger_record_of_an_unknown_turn_is_empty() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(1, 20 * MS, "x")
    nothing = ledger.record(7)
    assert nothing == Delivered(7, 0, "")
    assert nothing.delivered_ms == 0.0


def test_ledger_record_does_not_reset() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(3, 10 * MS, "a")
    assert ledger.record(3) == ledger.record(3) == Delivered(3, 10 * MS, "a")
    ledger.delivered(3, 10 * MS, "b")
    assert ledger.record(3) == Delivered(3, 20 * MS, "ab")


def test_ledger_keeps_only_the_last_turns() -> None:
    ledger = DeliveryLedger(keep=2)
    for turn in (1, 2, 3):
        ledger.delivered(turn, turn * MS, f"t{turn}")
    assert ledger.record(1) == Delivered(1, 0, "")
    assert ledger.record(2) == Delivered(2, 2 * MS, "t2")
    assert ledger.record(3) == Delivered(3, 3 * MS, "t3")
    ledger.delivered(3, MS, "!")  # an existing turn evicts nothing
    assert ledger.record(2) == Delivered(2, 2 * MS, "t2")
    ledger.delivered(4, 4 * MS, "t4")
    assert ledger.record(2) == Delivered(2, 0, "")
    assert ledger.record(3) == Delivered(3, 4 * MS, "t3!")


def test_ledger_late_frame_of_an_old_turn_does_not_evict_newer_turns() -> None:
    ledger = DeliveryLedger(keep=2)
    ledger.delivered(5, MS, "five")
    ledger.delivered(6, MS, "six")
    ledger.delivered(4, MS, "four")
    assert ledger.record(5) == Delivered(5, MS, "five")
    assert ledger.record(6) == Delivered(6, MS, "six")


# -- LatencyTracker ---------------------------------------------------------------------


def _full_turn(tracker: LatencyTracker, turn: int = 1) -> None:
    """A turn with every stage, in ms of session time; perf marks in ns."""

    def emit(kind: str, at_ms: int, origin_ms: int = 0, perf: int = 0) -> None:
        tracker.emitted(kind, turn, at_ms * MS, origin_ms * MS, perf)

    def recv(kind: str, at_ms: int, perf: int = 0) -> None:
        tracker.received(kind, turn, at_ms * MS, perf)

    # The user pauses mid-turn: two speech ends and two finals before the commit.
    emit("vad.speech_end", 1_100, origin_ms=1_000)
    emit("asr.final", 1_200)
    emit("vad.speech_end", 2_300, origin_ms=2_000)
    emit("asr.final", 2_450)
    emit("turn.commit", 2_500, perf=10_000)
    recv("turn.commit", 2_502, perf=12_000)
    # After the commit, neither counts.
    emit("vad.speech_end", 9_000, origin_ms=8_000)
    emit("asr.final", 9_100)
    emit("turn.commit", 9_200, perf=90_000)  # only the first commit counts
    recv("turn.commit", 9_300, perf=99_000)
    emit("llm.delta", 2_900, perf=20_000)
    recv("llm.delta", 2_950, perf=23_000)
    emit("llm.delta", 3_000, perf=24_000)
    recv("llm.delta", 3_010, perf=30_000)
    emit("tts.audio", 3_100, perf=30_000)
    recv("tts.audio", 3_120, perf=35_000)
    emit("tts.audio", 3_150, perf=40_000)
    emit("audio.out", 3_200, perf=50_000)
    emit("audio.out", 3_220, perf=60_000)


def test_every_field_of_a_full_turn() -> None:
    tracker = LatencyTracker()
    _full_turn(tracker)
    lat = tracker.finish(1, interrupted=True, delivered_ms=480.0)
    assert lat.turn == 1
    assert lat.vad_ms == pytest.approx(300.0)  # 2300 - 2000 (last speech end)
    assert lat.asr_ms == pytest.approx(450.0)  # 2450 - 2000 (last final)
    assert lat.llm_ttft_ms == pytest.approx(398.0)  # 2900 - 2502
    assert lat.tts_ttfa_ms == pytest.approx(150.0)  # 3100 - 2950
    assert lat.output_ms == pytest.approx(80.0)  # 3200 - 3120
    assert lat.kernel_us == pytest.approx(10.0)  # (2000 + 3000 + 5000) ns
    assert lat.v2v_ms == pytest.approx(1200.0)  # 3200 - 2000
    assert lat.interrupted is True
    assert lat.delivered_ms == 480.0


def test_values_lists_the_measured_fields() -> None:
    tracker = LatencyTracker()
    tracker.emitted("vad.speech_end", 4, 130 * MS, 100 * MS, 0)
    tracker.emitted("audio.out", 4, 900 * MS, 0, 0)
    values = tracker.finish(4).values()
    assert values == {
        "vad_ms": pytest.approx(30.0),
        "v2v_ms": pytest.approx(800.0),
        "interrupted": 0.0,
        "delivered_ms": 0.0,
    }


def test_speech_end_and_final_keep_the_last_value_before_commit() -> None:
    tracker = LatencyTracker()
    tracker.emitted("vad.speech_end", 2, 50 * MS, 40 * MS, 0)
    tracker.emitted("asr.final", 2, 70 * MS, 0, 0)
    tracker.emitted("vad.speech_end", 2, 150 * MS, 100 * MS, 0)
    tracker.emitted("asr.final", 2, 190 * MS, 0, 0)
    tracker.emitted("turn.commit", 2, 200 * MS, 0, 0)
    tracker.emitted("vad.speech_end", 2, 500 * MS, 400 * MS, 0)
    tracker.emitted("asr.final", 2, 600 * MS, 0, 0)
    tracker.emitted("audio.out", 2, 300 * MS, 0, 0)
    lat = tracker.finish(2)
    assert lat.vad_ms == pytest.approx(50.0)
    assert lat.asr_ms == pytest.approx(90.0)
    assert lat.v2v_ms == pytest.approx(200.0)


def test_other_kinds_keep_their_first_value() -> None:
    tracker = LatencyTracker()
    tracker.received("turn.commit", 1, 100 * MS, 0)
    tracker.received("turn.commit", 1, 10 * MS, 0)
    tracker.emitted("llm.delta", 1, 150 * MS, 0, 0)
    tracker.emitted("llm.delta", 1, 120 * MS, 0, 0)
    assert tracker.finish(1).llm_ttft_ms == pytest.approx(50.0)


def test_missing_stages_are_none() -> None:
    tracker = LatencyTracker()
    tracker.received("llm.delta", 3, 1_000 * MS, 0)
    tracker.emitted("tts.audio", 3, 1_150 * MS, 0, 0)
    lat = tracker.finish(3)
    assert lat.tts_ttfa_ms == pytest.approx(150.0)
    assert lat.vad_ms is None
    assert lat.asr_ms is None
    assert lat.llm_ttft_ms is None
    assert lat.output_ms is None
    assert lat.v2v_ms is None
    assert lat.kernel_us is None  # no hop has both an emitted and a received perf mark
    assert lat.interrupted is False
    assert lat.delivered_ms == 0.0


def test_asr_without_a_speech_end_has_no_asr_ms() -> None:
    tracker = LatencyTracker()
    tracker.emitted("asr.final", 1, 10 * MS, 0, 0)
    assert tracker.finish(1).asr_ms is None


def test_kernel_us_counts_only_complete_critical_hops() -> None:
    tracker = LatencyTracker()
    tracker.emitted("turn.commit", 1, 0, 0, 1_000)
    tracker.received("turn.commit", 1, 0, 1_500)  # 500 ns
    tracker.emitted("llm.delta", 1, 0, 0, 2_000)  # never received: not a hop
    tracker.received("tts.audio", 1, 0, 9_000)  # never emitted: not a hop
    tracker.emitted("audio.out", 1, 0, 0, 3_000)  # not a critical hop
    tracker.received("audio.out", 1, 0, 8_000)
    assert tracker.finish(1).kernel_us == pytest.approx(0.5)


def test_finish_forgets_the_turn() -> None:
    tracker = LatencyTracker()
    _full_turn(tracker)
    assert tracker.finish(1).v2v_ms is not None
    again = tracker.finish(1)
    assert again == TurnLatency(turn=1)


def test_turns_are_independent() -> None:
    tracker = LatencyTracker()
    _full_turn(tracker, turn=1)
    tracker.emitted("vad.speech_end", 2, 10 * MS, 5 * MS, 0)
    assert tracker.finish(2).vad_ms == pytest.approx(5.0)
    assert tracker.finish(1).v2v_ms == pytest.approx(1200.0)


def test_forget_before_drops_older_turns() -> None:
    tracker = LatencyTracker()
    for turn in (1, 2, 3, 4):
        tracker.emitted("vad.speech_end", turn, 20 * MS, 10 * MS, 0)
    tracker.forget_before(3)
    assert tracker.finish(1).vad_ms is None
    assert tracker.finish(2).vad_ms is None
    assert tracker.finish(3).vad_ms == pytest.approx(10.0)
    assert tracker.finish(4).vad_ms == pytest.approx(10.0)
