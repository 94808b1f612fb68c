"""Kernel cost in CPU instructions (valgrind's callgrind): repeatable on a noisy machine.

    python benchmarks/kernel_instructions.py                      # this tree
    python benchmarks/kernel_instructions.py --baseline ../old    # and another checkout's src

Wall-clock medians on a shared 2-core VM move by 20-30 % from run to run; an
instruction count does not (the same binary, inputs and environment give the same
total). Each measurement runs the same pipeline as ``benchmarks/kernel.py``
(``ingress -> N pass-through nodes -> arrival``, inline or queued) twice under
callgrind, with 2,000 and 12,000 events, so that start-up cancels out:
``(I(12000) - I(2000)) / 10000`` instructions per event. Per hop is the
difference between the 10-node chain and a chain of 0 nodes, over 10. The
pusher waits for room when ``push`` refuses (the queued chain's first inbox is
bounded), as a transport does.

Barge-in, on the interruption pipeline of ``benchmarks/kernel.py`` in virtual
time (so that the same work is done every run): *decision* is a commit and
an interrupt pushed back to back (the kernel's turn machinery alone: number the
reply, fence, clear, cancel, record); *trial* is a whole trial of the wall-clock
benchmark (commit, the LLM streams, 10 s of audio synthesized at once and
buffered, three frames played, interrupt). Per unit: runs of 1,000 and 5,000
decisions, and of 10 and 30 trials.

The last line of output is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def child(hops: int, queued: bool, events: int) -> None:
    """Push ``events`` through the chain (runs inside callgrind)."""
    import msgspec

    sys.path.insert(0, str(HERE))
    import kernel as bench
    from rspp.kernel import PipelineSpec, build

    nodes = []
    upstream = "input"
    for i in range(hops):
        nodes.append(
            {"name": f"p{i}", "type": "passthrough", "inputs": [upstream], "queued": queued}
        )
        upstream = f"p{i}"
    nodes.append({"name": "arrive", "type": "bench.arrive", "inputs": [upstream]})
    spec = msgspec.convert({"name": "b", "input": ["bench.tick"], "nodes": nodes}, PipelineSpec)

    async def main() -> None:
        pipeline = build(spec, bench.registry)
        async with pipeline.session("bench") as session:
            arrive = session.node("arrive")
            for i in range(events):
                try:
                    session.push(bench.Tick(n=i))
                except bench.Overloaded:
                    await session.writable("bench.tick")
                    session.push(bench.Tick(n=i))
                if queued and i % 256 == 255:
                    await asyncio.sleep(0)
            while len(arrive.arrivals) < events:  # noqa: ASYNC110 - waiting is the point
                await asyncio.sleep(0)

    asyncio.run(main())


def barge_child(what: str, count: int) -> None:
    """Barge-in decisions or trials in virtual time (runs inside callgrind)."""
    sys.path.insert(0, str(HERE))
    import kernel as bench
    from rspp.events import Interrupt, TurnCommit
    from rspp.kernel import build
    from rspp.testing import run_virtual

    async def main() -> None:
        pipeline = build(bench.barge_spec(), bench.registry)
        sink = bench.PerfSink()
        async with pipeline.session("bench", sinks={"client": sink}) as session:
            llm = session.node("llm")
            for trial in range(count):
                turn = session.turns.epoch
                session.push(TurnCommit(text=f"trial {trial}"))
                while what == "trial":
                    await asyncio.sleep(0.005)
                    recent = sink.records[-20:]
                    frames = sum(
                        1 for _, ev in recent if ev.kind == "audio.out" and ev.turn == turn
                    )
                    stream = llm.streams[-1] if llm.streams else None
                    mid_stream = stream is not None and stream.turn == turn
                    if mid_stream and frames >= 3 and len(stream.produced) >= 3:  # type: ignore[union-attr]
                        break
                session.push(Interrupt())
                if what == "trial":
                    await asyncio.sleep(0.1)
                sink.records.clear()
            await asyncio.sleep(0.01)

    run_virtual(main())


def counted(src: Path, args: list[str]) -> int:
    """Instructions of one run of this script with ``args`` (under callgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                str(Path(__file__).resolve()),
                *args,
            ],
            env={**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    assert match is not None, proc.stderr[-2000:]
    return int(match.group(1))


def barge(src: Path, what: str, small: int, large: int) -> float:
    low = counted(src, ["--barge", what, str(small)])
    return (counted(src, ["--barge", what, str(large)]) - low) / (large - small)


def instructions(src: Path, hops: int, queued: bool, events: int) -> int:
    return counted(src, ["--child", str(hops), "queued" if queued else "inline", str(events)])


def per_event(src: Path, hops: int, queued: bool) -> float:
    return (instructions(src, hops, queued, 12_000) - instructions(src, hops, queued, 2_000)) / 1e4


def warm_up(src: Path) -> None:
    """Run each child once outside callgrind: Python compiles what changed (the ``.pyc``
    files) in the first run after an edit, which would otherwise count in one run only."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    me = str(Path(__file__).resolve())
    for args in (["--child", "10", "queued", "10"], ["--barge", "trial", "1"]):
        subprocess.run([sys.executable, me, *args], env=env, check=True, capture_output=True)


def measure(src: Path) -> dict[str, float]:
    warm_up(src)
    inline0 = per_event(src, 0, False)
    inline10 = per_event(src, 10, False)
    queued10 = per_event(src, 10, True)
    return {
        "push_and_arrive": round(inline0),
        "inline_per_event_10_hops": round(inline10),
        "inline_per_hop": round((inline10 - inline0) / 10),
        "queued_per_event_10_hops": round(queued10),
        "barge_in_decision": round(barge(src, "decision", 1000, 5000)),
        "barge_in_trial": round(barge(src, "trial", 10, 30)),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3] == "queued", int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--barge":
        barge_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description="kernel instructions per event (callgrind)")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure side by side")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    result: dict[str, dict[str, float]] = {"this": measure(ROOT / "src")}
    if args.baseline is not None:
        result["baseline"] = measure(args.baseline.resolve() / "src")
    for name, numbers in result.items():
        print(name, " ".join(f"{k}={v:,.0f}" for k, v in numbers.items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
