"""The chaos benchmark in small: four live calls through a cluster of real processes, one
fault of each kind -- SIGKILL, SIGTERM (drain), SIGSTOP past the lease TTL, a planned
move, a Redis restart, a gateway kill -- and nothing lost at the clients.

It runs the scenario of ``benchmarks/chaos.py`` itself (:func:`chaos.run_chaos`: the
same calls, faults and counting; fewer calls, faults closer together), so the two
cannot drift apart. What is asserted is what the callers received and played: no call dropped,
every utterance answered, no reply heard or shown twice, not one frame of a replaced
owner, and no frame sent to a client twice (a resume resends only what is above the
client's last position, ``docs/protocol.md``). Pauses are the benchmark's business
(they depend on the machine's load).

The gateway dies last, after the Redis restart, and late in the calls -- once each of
its calls has more than 1000 output entries in the store (more than one read of its
output stream), as the gateway of a long call would; a reattach that resends old
output shows here. It dies while its calls' bot speaks, 2.5 to 6 s into a reply: with
the caller silent (a line said while the client has no connection reaches the server
late) and the reply's text all arrived. (Text that came after the client's last audio
frame is judged by the client's ``last_seq``, which now names each text's writer: the
gateway stamps it. That case, and a new owner's text arriving before its audio, are
tested in ``test_reattach.py``.)
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
    workers=3,
    stagger_s=1.0,
    first_fault_s=6.0,
    spacing_s=4.0,
    kinds=("sigkill", "sigterm", "sigstop", "move", "redis", "gateway"),
    moves=1,
    replace_after_s=1.0,
    gateway_after_entries=1100,
    gateway_in_reply_ms=(2500.0, 6000.0),
    max_wait_s=30.0,
)


def test_one_fault_of_each_kind_and_the_callers_lose_nothing(tmp_path: Path) -> None:
    played = chaos.play(SCENARIO, tmp_path / "logs", 80.0)
    run, out, story = played.run, played.out, played.story

    assert out["faults"]["count"] == len(SCENARIO.kinds), story
    assert out["faults_failed"] == [], story
    assert all(f.hit for f in run.faults), story  # each fault hit at least one call
    assert out["drain_exit_code"] == 0, story
    assert out["calls_dropped"] == 0, story
    assert out["utterances_lost"] == 0, story
    assert out["replies_doubled"] == 0, story
    assert out["stale_owner_frames"] == 0, story
    assert out["resent_frames"] == 0, story  # a resume resends only what is new to the client
