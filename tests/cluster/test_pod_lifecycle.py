"""What Kubernetes does to worker pods, played on real processes with live calls.

A rolling update (maxSurge 1, maxUnavailable 0, as ``deploy/k8s`` sets it): a new
worker is started and becomes ready, then an old one gets SIGTERM and -- if it has
not exited by the grace period -- SIGKILL; one old worker after another until none is
left. Then a scale-down by one. The workers' drain deadline is the grace period less a
margin, the one value the manifests derive both from. It runs the chaos benchmark's
``--lifecycle`` scenario (:func:`chaos.run_chaos`, the same calls and counting) on
four calls, so the test and the benchmark cannot drift apart.

Asserted at the clients: no call dropped, every utterance answered, no reply heard
twice, not a frame of a replaced owner; and of the pods: each drained within its grace
period and exited 0 (none needed the SIGKILL). The pause each call heard is reported.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import chaos  # benchmarks/chaos.py

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

SCENARIO = chaos.Scenario(
    calls=4,
    workers=2,
    stagger_s=1.0,
    first_fault_s=5.0,
    spacing_s=1.0,
    min_gap_s=0.0,  # (each step waits for the one before: a rolling update)
    kinds=chaos.LIFECYCLE,
    grace_s=12.0,
    drain_margin_s=4.0,  # drain deadline 8 s: mid-reply calls go by snapshot after 4 s
    lines=3,  # the pods are all stopped by ~15 s; the calls last ~35 s
    max_wait_s=30.0,
)


def test_a_rolling_update_and_a_scale_down_lose_no_call(tmp_path: Path) -> None:
    played = chaos.play(SCENARIO, tmp_path / "logs", 120.0)
    run, out, found, story = played.run, played.out, played.found, played.story
    print(story)  # the pause each call heard: found["faults"][n]["pause_ms_by_call"]

    kinds = [f.kind for f in run.faults]
    assert kinds == ["rolling", "rolling", "scaledown"], story  # both old pods, then one
    assert out["faults_failed"] == [], story
    assert all(f.hit for f in run.faults), story  # each pod stopped had calls to hand over
    assert out["pods_killed_at_grace"] == 0, story
    assert sorted(out["pod_exit_codes"].values()) == [0, 0, 0], story
    assert out["calls_dropped"] == 0, story
    assert out["utterances_lost"] == 0, story
    assert out["replies_doubled"] == 0, story
    assert out["stale_owner_frames"] == 0, story
    assert out["resent_frames"] == 0, story
    assert out["targets"]["pods_drained_in_grace"], story
    for fault in found["faults"]:
        assert set(fault["pause_ms_by_call"]) == set(fault["mid"]), story
