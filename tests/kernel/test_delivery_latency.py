"""Sans-IO bookkeeping: what reached the client (delivery) and where the time went (latency)."""

from __future__ import annotations

import msgspec
import pytest

from rspp.kernel.delivery import Delivered, DeliveryLedger, LedgerEntry
from rspp.kernel.latency import LatencySnapshot, LatencyTracker, SpeculationStats, TurnLatency

MS = 1_000_000  # ns

# -- DeliveryLedger ---------------------------------------------------------------------


def test_ledger_sums_durations_and_concatenates_texts_per_turn() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(1, 20 * MS, "Hel")
    ledger.delivered(2, 20 * MS, "Other")
    ledger.delivered(1, 20 * MS, "")
    ledger.delivered(1, 15 * MS, "lo.")
    one = ledger.record(1)
    # Without playback reports, heard is everything sent.
    assert one == Delivered(1, 55 * MS, "Hello.", 55 * MS, played=False)
    assert one.delivered_ms == pytest.approx(55.0)
    assert ledger.record(2) == Delivered(2, 20 * MS, "Other", 20 * MS)


def test_ledger_record_of_an_unknown_turn_is_empty() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(1, 20 * MS, "x")
    nothing = ledger.record(7)
    assert nothing == Delivered(7, 0, "", 0, played=False)
    assert nothing.delivered_ms == 0.0


def test_ledger_record_does_not_reset() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(3, 10 * MS, "a")
    assert ledger.record(3) == ledger.record(3) == Delivered(3, 10 * MS, "a", 10 * MS)
    ledger.delivered(3, 10 * MS, "b")
    assert ledger.record(3) == Delivered(3, 20 * MS, "ab", 20 * MS)


def test_ledger_keeps_only_the_last_turns() -> None:
    ledger = DeliveryLedger(keep=2)
    for turn in (1, 2, 3):
        ledger.delivered(turn, turn * MS, f"t{turn}")
    assert ledger.record(1) == Delivered(1, 0, "")
    assert ledger.record(2) == Delivered(2, 2 * MS, "t2", 2 * MS)
    assert ledger.record(3) == Delivered(3, 3 * MS, "t3", 3 * MS)
    ledger.delivered(3, MS, "!")  # an existing turn evicts nothing
    assert ledger.record(2) == Delivered(2, 2 * MS, "t2", 2 * MS)
    ledger.delivered(4, 4 * MS, "t4")
    assert ledger.record(2) == Delivered(2, 0, "")
    assert ledger.record(3) == Delivered(3, 4 * MS, "t3!", 4 * MS)


def test_ledger_late_frame_of_an_old_turn_does_not_evict_newer_turns() -> None:
    ledger = DeliveryLedger(keep=2)
    ledger.delivered(5, MS, "five")
    ledger.delivered(6, MS, "six")
    ledger.delivered(4, MS, "four")
    assert ledger.record(5) == Delivered(5, MS, "five", MS)
    assert ledger.record(6) == Delivered(6, MS, "six", MS)
    assert ledger.record(4) == Delivered(4, 0, "")


def _four_frames(ledger: DeliveryLedger, turn: int = 1) -> None:
    """Four frames, ending at 20, 40, 60 and 80 ms; the one ending at 40 carries no text."""
    ledger.delivered(turn, 20 * MS, "Once ")
    ledger.delivered(turn, 20 * MS, "")
    ledger.delivered(turn, 20 * MS, "upon ")
    ledger.delivered(turn, 20 * MS, "a time.")


def test_played_heard_is_the_text_of_the_frames_played_to_their_end() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    ledger.played(1, 50.0)
    heard = ledger.record(1)
    assert heard == Delivered(1, 50 * MS, "Once ", 80 * MS, played=True)
    assert heard.delivered_ms == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("played_ms", "heard"),
    [
        (0.0, ""),  # a report of nothing played: nothing heard (not everything sent)
        (19.999999, ""),  # the first frame not quite played out
        (20.0, "Once "),  # a frame whose end was reached is heard
        (59.0, "Once "),
        (60.0, "Once upon "),
        (79.5, "Once upon "),
        (80.0, "Once upon a time."),
    ],
)
def test_played_frame_boundaries(played_ms: float, heard: str) -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    ledger.played(1, played_ms)
    record = ledger.record(1)
    assert record.heard_text == heard
    assert record.delivered_ns == int(played_ms * 1e6)
    assert record.sent_ns == 80 * MS
    assert record.played is True


def test_played_is_capped_at_what_was_sent() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    ledger.played(1, 5_000.0)
    assert ledger.record(1) == Delivered(1, 80 * MS, "Once upon a time.", 80 * MS, played=True)
    # The cap is what was sent then: more audio sent later is not heard yet.
    ledger.delivered(1, 20 * MS, " The end.")
    assert ledger.record(1) == Delivered(1, 80 * MS, "Once upon a time.", 100 * MS, played=True)
    ledger.played(1, 5_000.0)
    assert ledger.record(1) == Delivered(
        1, 100 * MS, "Once upon a time. The end.", 100 * MS, played=True
    )


def test_played_never_decreases() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    ledger.played(1, 65.0)
    ledger.played(1, 30.0)  # an older report arriving late
    assert ledger.record(1) == Delivered(1, 65 * MS, "Once upon ", 80 * MS, played=True)
    ledger.played(1, 0.0)
    assert ledger.record(1) == Delivered(1, 65 * MS, "Once upon ", 80 * MS, played=True)
    ledger.played(1, 70.0)
    assert ledger.record(1).delivered_ns == 70 * MS


def test_played_is_a_total_not_an_increment() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    ledger.played(1, 20.0)
    ledger.played(1, 20.0)
    assert ledger.record(1) == Delivered(1, 20 * MS, "Once ", 80 * MS, played=True)


def test_played_takes_fractions_of_a_millisecond() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(1, 10 * MS, "a")
    ledger.played(1, 2.5)
    assert ledger.record(1).delivered_ns == 2_500_000


def test_played_of_an_unknown_turn_is_ignored() -> None:
    ledger = DeliveryLedger(keep=2)
    ledger.delivered(1, MS, "one")
    ledger.delivered(2, MS, "two")
    ledger.played(3, 10.0)  # creates nothing ...
    assert ledger.record(3) == Delivered(3, 0, "")
    ledger.delivered(3, MS, "three")  # ... so no report is waiting for turn 3
    assert ledger.record(3) == Delivered(3, MS, "three", MS, played=False)
    assert ledger.record(1) == Delivered(1, 0, "")  # evicted by 3, not by the report
    assert ledger.record(2) == Delivered(2, MS, "two", MS)


def test_played_of_an_evicted_turn_is_ignored() -> None:
    ledger = DeliveryLedger(keep=1)
    ledger.delivered(1, MS, "one")
    ledger.delivered(2, MS, "two")
    ledger.played(1, 1.0)
    assert ledger.record(1) == Delivered(1, 0, "")
    assert ledger.record(2) == Delivered(2, MS, "two", MS, played=False)


def test_playback_reports_are_per_turn() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger, turn=1)
    _four_frames(ledger, turn=2)
    ledger.played(2, 25.0)
    assert ledger.record(1) == Delivered(1, 80 * MS, "Once upon a time.", 80 * MS)
    assert ledger.record(2) == Delivered(2, 25 * MS, "Once ", 80 * MS, played=True)


def test_snapshot_is_the_entry_of_one_turn() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger, turn=1)
    ledger.delivered(2, 10 * MS, "other")
    ledger.played(1, 45.0)
    assert ledger.snapshot(1) == LedgerEntry(
        turn=1,
        sent_ns=80 * MS,
        ends=[20 * MS, 60 * MS, 80 * MS],
        texts=["Once ", "upon ", "a time."],
        played_ns=45 * MS,
    )
    assert ledger.snapshot(2) == LedgerEntry(
        turn=2, sent_ns=10 * MS, ends=[10 * MS], texts=["other"], played_ns=-1
    )
    assert ledger.snapshot(3) is None


def test_a_snapshot_does_not_change_with_the_ledger() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    snap = ledger.snapshot(1)
    assert snap is not None
    encoded = msgspec.msgpack.encode(snap)
    ledger.delivered(1, 20 * MS, " More.")
    ledger.played(1, 30.0)
    assert msgspec.msgpack.encode(snap) == encoded
    assert snap.sent_ns == 80 * MS
    assert snap.ends == [20 * MS, 60 * MS, 80 * MS]
    assert snap.texts == ["Once ", "upon ", "a time."]
    assert snap.played_ns == -1
    # Nor does the ledger change with the snapshot.
    snap.ends.append(1)
    snap.texts.append("x")
    snap.sent_ns = 0
    assert ledger.record(1) == Delivered(1, 30 * MS, "Once ", 100 * MS, played=True)


def test_restore_round_trip_through_the_wire() -> None:
    ledger = DeliveryLedger()
    _four_frames(ledger)
    ledger.played(1, 61.0)
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(ledger.snapshot(1)), type=LedgerEntry)
    moved = DeliveryLedger()
    moved.restore(wire)
    assert moved.record(1) == ledger.record(1)
    assert moved.record(1) == Delivered(1, 61 * MS, "Once upon ", 80 * MS, played=True)
    # It goes on as if it had never moved.
    moved.played(1, 10.0)  # never decreases
    moved.delivered(1, 20 * MS, " The end.")
    moved.played(1, 100.0)
    assert moved.record(1) == Delivered(
        1, 100 * MS, "Once upon a time. The end.", 100 * MS, played=True
    )


def test_restore_replaces_every_turn_and_takes_a_copy() -> None:
    entry = LedgerEntry(turn=5, sent_ns=30 * MS, ends=[30 * MS], texts=["Hi."])
    ledger = DeliveryLedger()
    ledger.delivered(1, MS, "one")
    ledger.delivered(2, MS, "two")
    ledger.restore(entry)
    assert ledger.record(1) == Delivered(1, 0, "")
    assert ledger.record(2) == Delivered(2, 0, "")
    assert ledger.record(5) == Delivered(5, 30 * MS, "Hi.", 30 * MS)
    entry.ends.append(40 * MS)
    entry.texts.append("changed")
    entry.sent_ns = 40 * MS
    assert ledger.record(5) == Delivered(5, 30 * MS, "Hi.", 30 * MS)
    assert ledger.snapshot(5) == LedgerEntry(turn=5, sent_ns=30 * MS, ends=[30 * MS], texts=["Hi."])


def test_restore_of_nothing_clears_the_ledger() -> None:
    ledger = DeliveryLedger()
    ledger.delivered(1, MS, "one")
    ledger.restore(None)
    assert ledger.record(1) == Delivered(1, 0, "")
    assert ledger.snapshot(1) is None


def test_a_restored_ledger_still_keeps_only_the_last_turns() -> None:
    ledger = DeliveryLedger(keep=2)
    ledger.restore(LedgerEntry(turn=3, sent_ns=MS, ends=[MS], texts=["three"]))
    ledger.delivered(4, MS, "four")
    ledger.delivered(5, MS, "five")
    assert ledger.record(3) == Delivered(3, 0, "")
    assert ledger.record(4) == Delivered(4, MS, "four", MS)
    assert ledger.record(5) == Delivered(5, MS, "five", MS)


# -- LatencyTracker ---------------------------------------------------------------------
#
# Session times are given in ms (converted to ns); perf marks are in ns. All differences
# are whole numbers of ms or us, so the expected values are exact.


def _committed_turn(tracker: LatencyTracker, turn: int = 1) -> None:
    """A committed reply with every stage."""
    # The user pauses mid-turn: two speech ends and two finals before the commit.
    tracker.user_mark("vad.speech_end", 1_100 * MS, 1_000 * MS)
    tracker.user_mark("asr.final", 1_200 * MS, 0)
    tracker.user_mark("vad.speech_end", 2_300 * MS, 2_000 * MS)
    tracker.user_mark("asr.final", 2_450 * MS, 0)
    tracker.root(turn, 2_500 * MS, 10_000, speculative=False)
    tracker.received("turn.commit", turn, 2_502 * MS, 12_000)  # hop: 2000 ns
    tracker.received("turn.commit", turn, 2_600 * MS, 99_000)  # only the first receipt counts
    tracker.emitted("llm.delta", turn, 2_900 * MS, 20_000)
    tracker.received("llm.delta", turn, 2_950 * MS, 23_000)  # hop: 3000 ns
    tracker.emitted("llm.delta", turn, 3_000 * MS, 24_000)
    tracker.received("llm.delta", turn, 3_010 * MS, 30_000)
    tracker.emitted("tts.audio", turn, 3_100 * MS, 30_000)
    tracker.received("tts.audio", turn, 3_120 * MS, 35_000)  # hop: 5000 ns
    tracker.emitted("tts.audio", turn, 3_150 * MS, 40_000)
    tracker.emitted("audio.out", turn, 3_200 * MS, 50_000)
    tracker.emitted("audio.out", turn, 3_220 * MS, 60_000)


def test_every_field_of_a_committed_turn() -> None:
    tracker = LatencyTracker()
    _committed_turn(tracker)
    lat = tracker.finish(1, interrupted=True, delivered_ms=480.0)
    assert lat == TurnLatency(
        turn=1,
        vad_ms=300.0,  # 2300 - 2000 (the last speech end)
        asr_ms=450.0,  # 2450 - 2000 (the last final)
        endpoint_ms=500.0,  # the commit at 2500 - 2000
        llm_ttft_ms=398.0,  # 2900 - 2502 (the root received by the LLM)
        tts_ttfa_ms=150.0,  # 3100 - 2950
        output_ms=80.0,  # 3200 - 3120
        kernel_us=10.0,  # (2000 + 3000 + 5000) ns
        v2v_ms=1_200.0,  # 3200 - 2000
        speculative=False,
        saved_ms=None,  # only speculative replies save time
        interrupted=True,
        delivered_ms=480.0,
    )


def _speculative_turn(tracker: LatencyTracker, *, audio_ms: int, decided_ms: int) -> None:
    """A speculative reply 1, rooted at 1100 ms, confirmed at ``decided_ms``."""
    tracker.user_mark("vad.speech_end", 1_050 * MS, 1_000 * MS)
    tracker.root(1, 1_100 * MS, 1_000, speculative=True)
    tracker.received("turn.speculate", 1, 1_101 * MS, 1_400)  # hop: 400 ns
    tracker.emitted("llm.delta", 1, 1_300 * MS, 2_000)
    tracker.received("llm.delta", 1, 1_310 * MS, 2_600)  # hop: 600 ns
    tracker.emitted("tts.audio", 1, audio_ms * MS, 3_000)
    tracker.received("tts.audio", 1, (audio_ms + 5) * MS, 4_000)  # hop: 1000 ns
    # The final comes after the speculation started, before it was confirmed: it counts.
    tracker.user_mark("asr.final", 1_150 * MS, 0)
    tracker.decided(1, decided_ms * MS)
    tracker.emitted("audio.out", 1, (max(audio_ms, decided_ms) + 10) * MS, 5_000)


def test_every_field_of_a_confirmed_speculation_whose_audio_was_ready_before_the_decision() -> None:
    tracker = LatencyTracker()
    _speculative_turn(tracker, audio_ms=1_400, decided_ms=1_600)
    assert tracker.finish(1) == TurnLatency(
        turn=1,
        vad_ms=50.0,  # 1050 - 1000
        asr_ms=150.0,  # 1150 - 1000
        endpoint_ms=600.0,  # the confirm at 1600 - 1000
        llm_ttft_ms=199.0,  # 1300 - 1101
        tts_ttfa_ms=90.0,  # 1400 - 1310
        output_ms=205.0,  # 1610 - 1405
        kernel_us=2.0,  # (400 + 600 + 1000) ns
        v2v_ms=610.0,  # 1610 - 1000
        speculative=True,
        saved_ms=300.0,  # min(1400, 1600) - 1100: the audio was ready 300 ms after the root
        interrupted=False,
        delivered_ms=0.0,
    )


def test_every_field_of_a_confirmed_speculation_whose_audio_came_after_the_decision() -> None:
    tracker = LatencyTracker()
    _speculative_turn(tracker, audio_ms=1_400, decided_ms=1_250)
    assert tracker.finish(1, delivered_ms=20.0) == TurnLatency(
        turn=1,
        vad_ms=50.0,
        asr_ms=150.0,
        endpoint_ms=250.0,  # 1250 - 1000
        llm_ttft_ms=199.0,
        tts_ttfa_ms=90.0,
        output_ms=5.0,  # 1410 - 1405
        kernel_us=2.0,
        v2v_ms=410.0,  # 1410 - 1000
        speculative=True,
        saved_ms=150.0,  # min(1400, 1250) - 1100: generation had a 150 ms head start
        interrupted=False,
        delivered_ms=20.0,
    )


def test_a_confirmed_speculation_without_audio_saved_the_time_to_the_decision() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 100 * MS, 0, speculative=True)
    tracker.decided(1, 180 * MS)
    lat = tracker.finish(1, interrupted=True)
    assert lat.speculative is True
    assert lat.saved_ms == 80.0
    assert lat.interrupted is True


def test_an_unconfirmed_speculation_has_no_decision_and_saved_nothing() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 60 * MS, 50 * MS)
    tracker.root(1, 100 * MS, 0, speculative=True)
    tracker.emitted("tts.audio", 1, 150 * MS, 0)
    lat = tracker.finish(1)
    assert lat.speculative is True
    assert lat.endpoint_ms is None
    assert lat.saved_ms is None
    assert lat.vad_ms == 10.0


def test_the_latest_speech_end_and_final_before_the_decision_win() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 50 * MS, 40 * MS)
    tracker.user_mark("asr.final", 70 * MS, 0)
    tracker.user_mark("vad.speech_end", 150 * MS, 100 * MS)
    tracker.user_mark("asr.final", 190 * MS, 0)
    tracker.root(2, 200 * MS, 0, speculative=False)
    # After the decision: they belong to the next user turn.
    tracker.user_mark("vad.speech_end", 500 * MS, 400 * MS)
    tracker.user_mark("asr.final", 600 * MS, 0)
    tracker.emitted("audio.out", 2, 300 * MS, 0)
    lat = tracker.finish(2)
    assert (lat.vad_ms, lat.asr_ms, lat.endpoint_ms, lat.v2v_ms) == (50.0, 90.0, 100.0, 200.0)


def test_a_speculation_sees_the_latest_marks_up_to_its_confirmation() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 120 * MS, 100 * MS)
    tracker.user_mark("asr.final", 130 * MS, 0)
    tracker.root(1, 140 * MS, 0, speculative=True)
    # The user paused again before the end of the turn was decided: the later ones win.
    tracker.user_mark("vad.speech_end", 330 * MS, 300 * MS)
    tracker.user_mark("asr.final", 360 * MS, 0)
    tracker.decided(1, 400 * MS)
    tracker.user_mark("asr.final", 900 * MS, 0)  # after the decision: not this reply's
    lat = tracker.finish(1)
    assert (lat.vad_ms, lat.asr_ms, lat.endpoint_ms) == (30.0, 60.0, 100.0)


def test_a_final_after_the_speculative_root_and_before_the_confirm_counts() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 110 * MS, 100 * MS)
    tracker.root(1, 120 * MS, 0, speculative=True)
    tracker.user_mark("asr.final", 175 * MS, 0)
    tracker.decided(1, 200 * MS)
    assert tracker.finish(1).asr_ms == 75.0


def test_a_decision_consumes_the_user_marks() -> None:
    tracker = LatencyTracker()
    _committed_turn(tracker, turn=1)
    # The next commit comes without any new speech end or final.
    tracker.root(2, 5_000 * MS, 0, speculative=False)
    tracker.emitted("audio.out", 2, 5_500 * MS, 0)
    two = tracker.finish(2)
    assert (two.vad_ms, two.asr_ms, two.endpoint_ms, two.v2v_ms) == (None, None, None, None)
    # The first reply keeps its own marks.
    one = tracker.finish(1)
    assert (one.vad_ms, one.asr_ms, one.endpoint_ms) == (300.0, 450.0, 500.0)


def test_a_confirm_consumes_the_user_marks() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 110 * MS, 100 * MS)
    tracker.user_mark("asr.final", 120 * MS, 0)
    tracker.root(1, 130 * MS, 0, speculative=True)
    tracker.decided(1, 150 * MS)
    tracker.root(2, 900 * MS, 0, speculative=False)
    two = tracker.finish(2)
    assert (two.vad_ms, two.asr_ms, two.endpoint_ms) == (None, None, None)
    assert tracker.finish(1).endpoint_ms == 50.0


def test_a_speculative_root_does_not_consume_the_user_marks() -> None:
    """A dropped speculation leaves the user turn's marks to the reply that follows."""
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 110 * MS, 100 * MS)
    tracker.root(1, 120 * MS, 0, speculative=True)
    tracker.drop(1)  # e.g. the transcript changed: a miss
    tracker.user_mark("asr.final", 140 * MS, 0)
    tracker.root(2, 150 * MS, 0, speculative=False)
    lat = tracker.finish(2)
    assert (lat.vad_ms, lat.asr_ms, lat.endpoint_ms) == (10.0, 40.0, 50.0)
    assert lat.speculative is False
    assert lat.saved_ms is None


def test_missing_stages_are_none() -> None:
    tracker = LatencyTracker()
    tracker.root(3, 900 * MS, 0, speculative=False)
    tracker.received("llm.delta", 3, 1_000 * MS, 0)
    tracker.emitted("tts.audio", 3, 1_150 * MS, 0)
    assert tracker.finish(3) == TurnLatency(turn=3, tts_ttfa_ms=150.0)


def test_asr_without_a_speech_end_has_no_asr_ms() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("asr.final", 10 * MS, 0)
    tracker.root(1, 20 * MS, 0, speculative=False)
    lat = tracker.finish(1)
    assert lat.asr_ms is None
    assert lat.endpoint_ms is None


def test_marks_of_a_reply_that_was_never_rooted_are_ignored() -> None:
    tracker = LatencyTracker()
    tracker.emitted("llm.delta", 5, 10 * MS, 0)
    tracker.received("turn.commit", 5, 5 * MS, 0)
    tracker.decided(5, 20 * MS)
    assert tracker.first_audio(5) is None
    assert tracker.finish(5) == TurnLatency(turn=5)


def test_milestones_keep_their_first_value() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 0, 0, speculative=False)
    tracker.received("turn.commit", 1, 100 * MS, 0)
    tracker.received("turn.commit", 1, 10 * MS, 0)
    tracker.emitted("llm.delta", 1, 150 * MS, 0)
    tracker.emitted("llm.delta", 1, 120 * MS, 0)
    assert tracker.finish(1).llm_ttft_ms == 50.0


def test_first_audio() -> None:
    tracker = LatencyTracker()
    assert tracker.first_audio(1) is None
    tracker.root(1, 0, 0, speculative=True)
    assert tracker.first_audio(1) is None
    tracker.emitted("tts.audio", 1, 40 * MS, 0)
    tracker.emitted("tts.audio", 1, 60 * MS, 0)
    assert tracker.first_audio(1) == 40 * MS
    assert tracker.first_audio(2) is None


def test_kernel_us_counts_only_complete_critical_hops() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 0, 1_000, speculative=False)
    tracker.received("turn.commit", 1, 0, 1_500)  # the root hop: 500 ns
    tracker.emitted("llm.delta", 1, 0, 2_000)  # never received: not a hop
    tracker.received("tts.audio", 1, 0, 9_000)  # never emitted: not a hop
    tracker.emitted("audio.out", 1, 0, 3_000)  # not a critical hop
    tracker.received("audio.out", 1, 0, 8_000)
    assert tracker.finish(1).kernel_us == 0.5


def test_kernel_us_of_a_speculation_counts_its_root_hop() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 0, 1_000, speculative=True)
    tracker.received("turn.speculate", 1, 0, 4_000)  # received roots are keyed "root"
    assert tracker.finish(1).kernel_us == 3.0


def test_kernel_us_is_none_without_a_complete_hop() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 0, 1_000, speculative=False)  # emitted, never received
    tracker.received("llm.delta", 1, 0, 2_000)  # received, never emitted
    assert tracker.finish(1).kernel_us is None


def test_finish_forgets_the_turn() -> None:
    tracker = LatencyTracker()
    _committed_turn(tracker)
    assert tracker.finish(1).v2v_ms == 1_200.0
    assert tracker.first_audio(1) is None
    assert tracker.finish(1) == TurnLatency(turn=1)
    assert tracker.finish(1, interrupted=True, delivered_ms=5.0) == TurnLatency(
        turn=1, interrupted=True, delivered_ms=5.0
    )


def test_drop_forgets_the_turn() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 100 * MS, 0, speculative=True)
    tracker.emitted("tts.audio", 1, 150 * MS, 0)
    tracker.drop(1)
    assert tracker.first_audio(1) is None
    tracker.emitted("audio.out", 1, 200 * MS, 0)  # a late mark of the dropped reply
    assert tracker.finish(1) == TurnLatency(turn=1)
    tracker.drop(1)  # dropping twice, or an unknown reply, is harmless
    tracker.drop(42)


def test_turns_are_independent() -> None:
    tracker = LatencyTracker()
    _committed_turn(tracker, turn=1)
    tracker.user_mark("vad.speech_end", 4_010 * MS, 4_005 * MS)
    tracker.root(2, 4_020 * MS, 0, speculative=False)
    assert tracker.finish(2).vad_ms == 5.0
    assert tracker.finish(1).v2v_ms == 1_200.0


def test_values_lists_the_measured_fields() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 130 * MS, 100 * MS)
    tracker.root(4, 200 * MS, 0, speculative=True)
    tracker.decided(4, 250 * MS)
    tracker.emitted("audio.out", 4, 900 * MS, 0)
    values = tracker.finish(4).values()
    assert values == {
        "vad_ms": 30.0,
        "endpoint_ms": 150.0,
        "v2v_ms": 800.0,
        "speculative": 1.0,
        "saved_ms": 50.0,
        "interrupted": 0.0,
        "delivered_ms": 0.0,
    }


# -- LatencyTracker: moving a session ------------------------------------------------


def _moved(tracker: LatencyTracker) -> LatencyTracker:
    """A new tracker restored from ``tracker``'s snapshot, sent over the wire."""
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(tracker.snapshot()), type=LatencySnapshot)
    moved = LatencyTracker()
    moved.restore(wire)
    return moved


def test_an_empty_tracker_snapshot() -> None:
    assert LatencyTracker().snapshot() == LatencySnapshot()
    moved = _moved(LatencyTracker())
    assert moved.finish(1) == TurnLatency(turn=1)


def test_snapshot_restore_round_trip_of_a_committed_turn() -> None:
    tracker = LatencyTracker()
    _committed_turn(tracker)
    moved = _moved(tracker)
    expected = tracker.finish(1, interrupted=True, delivered_ms=480.0)
    assert expected.kernel_us == 10.0
    # Session-time marks moved; perf-counter marks did not: no hop before the move counts.
    assert moved.finish(1, interrupted=True, delivered_ms=480.0) == msgspec.structs.replace(
        expected, kernel_us=None
    )


def test_snapshot_restore_mid_speculation_then_both_go_on_alike() -> None:
    def before(t: LatencyTracker) -> None:
        t.user_mark("vad.speech_end", 1_050 * MS, 1_000 * MS)
        t.root(1, 1_100 * MS, 1_000, speculative=True)
        t.received("turn.speculate", 1, 1_101 * MS, 1_400)
        t.emitted("llm.delta", 1, 1_300 * MS, 2_000)

    def after(t: LatencyTracker) -> None:
        t.received("llm.delta", 1, 1_310 * MS, 2_600)
        t.emitted("tts.audio", 1, 1_400 * MS, 3_000)
        t.received("tts.audio", 1, 1_405 * MS, 4_000)  # hop: 1000 ns, both after the move
        t.user_mark("asr.final", 1_150 * MS, 0)  # after the root, before the confirm
        t.decided(1, 1_600 * MS)
        t.emitted("audio.out", 1, 1_610 * MS, 5_000)

    tracker = LatencyTracker()
    before(tracker)
    moved = _moved(tracker)
    assert moved.started(1) == 1_100 * MS
    assert moved.first_audio(1) is None
    after(tracker)
    after(moved)
    expected = tracker.finish(1)
    assert expected.kernel_us == 2.0  # 400 + 600 + 1000 ns
    assert expected.saved_ms == 300.0
    got = moved.finish(1)
    assert got == msgspec.structs.replace(expected, kernel_us=1.0)  # only the tts.audio hop
    assert (got.vad_ms, got.asr_ms, got.endpoint_ms, got.v2v_ms) == (50.0, 150.0, 600.0, 610.0)


def test_the_user_marks_in_progress_move() -> None:
    tracker = LatencyTracker()
    _committed_turn(tracker, turn=1)
    # The next user turn has begun: its marks are not any reply's yet.
    tracker.user_mark("vad.speech_end", 4_100 * MS, 4_000 * MS)
    tracker.user_mark("asr.final", 4_250 * MS, 0)
    moved = _moved(tracker)
    for t in (tracker, moved):
        t.root(2, 4_300 * MS, 0, speculative=False)
        t.emitted("audio.out", 2, 4_900 * MS, 0)
    two = moved.finish(2)
    assert two == tracker.finish(2)
    assert (two.vad_ms, two.asr_ms, two.endpoint_ms, two.v2v_ms) == (100.0, 250.0, 300.0, 900.0)
    assert moved.finish(1) == msgspec.structs.replace(tracker.finish(1), kernel_us=None)


def test_every_tracked_reply_moves() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 100 * MS, 0, speculative=False)
    tracker.emitted("tts.audio", 1, 150 * MS, 0)
    tracker.root(2, 200 * MS, 0, speculative=True)
    tracker.emitted("tts.audio", 2, 260 * MS, 0)
    moved = _moved(tracker)
    assert (moved.started(1), moved.first_audio(1)) == (100 * MS, 150 * MS)
    assert (moved.started(2), moved.first_audio(2)) == (200 * MS, 260 * MS)
    assert moved.started(3) is None
    moved.decided(2, 230 * MS)
    assert moved.finish(2).saved_ms == 30.0


def test_a_latency_snapshot_does_not_change_with_the_tracker() -> None:
    tracker = LatencyTracker()
    tracker.user_mark("vad.speech_end", 110 * MS, 100 * MS)
    tracker.root(1, 120 * MS, 0, speculative=True)
    tracker.emitted("llm.delta", 1, 130 * MS, 0)
    snap = tracker.snapshot()
    encoded = msgspec.msgpack.encode(snap)
    tracker.user_mark("asr.final", 140 * MS, 0)
    tracker.emitted("tts.audio", 1, 150 * MS, 0)
    tracker.received("llm.delta", 1, 135 * MS, 0)
    tracker.decided(1, 160 * MS)
    tracker.root(2, 170 * MS, 0, speculative=False)
    tracker.finish(1)
    assert msgspec.msgpack.encode(snap) == encoded


def test_restore_takes_a_copy_of_the_snapshot() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 100 * MS, 0, speculative=False)
    tracker.emitted("llm.delta", 1, 140 * MS, 0)
    snap = tracker.snapshot()
    moved = LatencyTracker()
    moved.restore(snap)
    snap.replies[0].emitted["llm.delta"] = 999 * MS
    snap.replies[0].emitted["tts.audio"] = 1 * MS
    snap.user.speech_end = 0
    moved.received("turn.commit", 1, 110 * MS, 0)
    lat = moved.finish(1)
    assert lat.llm_ttft_ms == 30.0  # 140 - 110, not the changed mark
    assert lat.tts_ttfa_ms is None


def test_restore_replaces_what_the_tracker_had() -> None:
    tracker = LatencyTracker()
    tracker.root(1, 100 * MS, 0, speculative=False)
    other = LatencyTracker()
    other.user_mark("vad.speech_end", 20 * MS, 10 * MS)
    other.root(5, 50 * MS, 0, speculative=False)
    other.user_mark("vad.speech_end", 70 * MS, 60 * MS)  # pending marks
    other.restore(tracker.snapshot())
    assert other.finish(5) == TurnLatency(turn=5)
    assert other.started(1) == 100 * MS
    other.root(2, 300 * MS, 0, speculative=False)
    assert other.finish(2).vad_ms is None  # the pending marks were replaced too


# -- SpeculationStats -------------------------------------------------------------------


def test_speculation_stats_start_empty() -> None:
    stats = SpeculationStats()
    assert (stats.attempts, stats.hits, stats.misses, stats.discarded) == (0, 0, 0, 0)
    assert (stats.wasted_llm_deltas, stats.wasted_tts_s, stats.saved_ms) == (0, 0.0, [])
    assert stats.hit_rate == 0.0
    stats.saved_ms.append(1.0)
    assert SpeculationStats().saved_ms == []  # not shared between instances


@pytest.mark.parametrize(
    ("reason", "misses", "discarded"),
    [
        ("speculation_miss", 1, 0),
        ("speculation_replaced", 1, 0),
        ("speculation_discarded", 0, 1),
        ("closed", 0, 1),
    ],
)
def test_ended_classifies_the_reason(reason: str, misses: int, discarded: int) -> None:
    stats = SpeculationStats()
    stats.ended(reason, 7, 250 * MS)
    assert (stats.misses, stats.discarded) == (misses, discarded)
    assert (stats.attempts, stats.hits) == (0, 0)  # the session counts those
    assert stats.wasted_llm_deltas == 7
    assert stats.wasted_tts_s == pytest.approx(0.25)


def test_waste_accumulates_over_every_ending() -> None:
    stats = SpeculationStats()
    stats.ended("speculation_miss", 3, 100 * MS)
    stats.ended("speculation_discarded", 4, 0)
    stats.ended("speculation_replaced", 0, 1_500 * MS)
    stats.ended("closed", 10, 400 * MS)
    assert (stats.misses, stats.discarded) == (2, 2)
    assert stats.wasted_llm_deltas == 17
    assert stats.wasted_tts_s == pytest.approx(2.0)


def test_hit_rate_counts_hits_against_misses_only() -> None:
    stats = SpeculationStats(attempts=6, hits=3)
    assert stats.hit_rate == 1.0
    stats.ended("speculation_discarded", 0, 0)  # the user kept talking: not a wrong guess
    assert stats.hit_rate == 1.0
    stats.ended("speculation_miss", 0, 0)
    assert stats.hit_rate == pytest.approx(0.75)
    stats.ended("speculation_replaced", 0, 0)
    assert stats.hit_rate == pytest.approx(0.6)
    assert SpeculationStats(misses=2).hit_rate == 0.0


def test_speculation_stats_travel_as_json() -> None:
    stats = SpeculationStats(attempts=3, hits=1, saved_ms=[120.0])
    stats.ended("speculation_miss", 5, 500 * MS)
    wire = msgspec.json.decode(msgspec.json.encode(stats), type=SpeculationStats)
    assert wire == stats
