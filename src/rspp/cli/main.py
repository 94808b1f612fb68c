"""The ``rspp`` command line: ``rspp demo``, ``rspp validate SPEC``, ``rspp kinds``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rspp.events import known_kinds
from rspp.kernel import BuildError, build, load_spec

__all__ = ["main"]


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def _demo(args: argparse.Namespace) -> int:
    from rspp.demo import run_demo, write_outputs

    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not wrap the table at 80 columns
        console = Console(width=130)
    mode = "virtual time" if args.virtual else "real time"
    console.print(f"[bold]RSPP demo[/bold]: a scripted call through the kernel ({mode}).")
    console.print(
        "Models are the test kit's fakes with realistic latency profiles; the VAD and the\n"
        "turn manager (end of turn, barge-in decisions, speculation) are real.\n"
    )
    with console.status("Talking to the bot..."):
        result = run_demo(virtual=args.virtual)
    for turn in result.turns:
        console.print(f"[cyan]user[/cyan]  {turn.user}")
        if turn.interrupted:
            console.print(f"[green]bot[/green]   {turn.heard.strip()} [red]<barge-in>[/red]")
            console.print(f"      [dim](generated, never heard: {turn.reply[len(turn.heard) :]!r})")
        else:
            console.print(f"[green]bot[/green]   {turn.reply.strip()}")
    table = Table(
        title="Per-turn latency in ms (EOT: end of turn decided; V2V: voice-to-voice; kernel: µs)"
    )
    columns = ("turn", "VAD", "ASR", "EOT", "LLM TTFT", "TTS TTFA", "kernel µs", "V2V")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("speculation")
    table.add_column("outcome")
    for turn in result.turns:
        lat = turn.latency
        if lat is None:
            continue
        outcome = f"interrupted after {lat.delivered_ms:,.0f} ms" if lat.interrupted else "played"
        spec = f"hit: -{lat.saved_ms:,.0f} ms" if lat.saved_ms is not None else "-"
        table.add_row(
            str(turn.turn),
            _fmt(lat.vad_ms),
            _fmt(lat.asr_ms),
            _fmt(lat.endpoint_ms),
            _fmt(lat.llm_ttft_ms),
            _fmt(lat.tts_ttfa_ms),
            "-" if lat.kernel_us is None else f"{lat.kernel_us:,.1f}",
            _fmt(lat.v2v_ms),
            spec,
            outcome,
        )
    console.print(table)
    stats = result.speculation
    console.print(
        f"Speculation: {stats.attempts} attempts, {stats.hits} hits, {stats.misses} misses, "
        f"{stats.discarded} discarded; wasted {stats.wasted_llm_deltas} LLM tokens "
        f"({stats.wasted_llm_s:.2f} s of LLM requests) and {stats.wasted_tts_s:.1f} s of TTS audio."
    )
    drops = result.stats.dropped("fenced")
    errors = result.stats.errors.total()
    console.print(f"Events fenced after barge-in: {drops}; node errors: {errors}")
    if args.out:
        for path in write_outputs(result, Path(args.out)):
            console.print(f"wrote {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    try:
        pipeline = build(load_spec(args.spec))
    except BuildError as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.spec}: pipeline {pipeline.name!r} is valid")
    for plan in pipeline.nodes:
        mode = f"queued (capacity {plan.capacity})" if plan.queued else "inline"
        sink = f" -> sink {plan.sink!r}" if plan.sink else ""
        print(f"  {plan.name:<12} {plan.type_name:<16} {mode}{sink}  <- {', '.join(plan.inputs)}")
    return 0


def _kinds(args: argparse.Namespace) -> int:
    for name, cls in sorted(known_kinds().items()):
        flags = [cls.lane.name.lower(), "fenced" if cls.fenced else "unfenced", cls.overload]
        print(f"{name:<22} {' '.join(flags)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rspp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the scripted demo conversation")
    demo.add_argument("--virtual", action="store_true", help="run in virtual time (instant)")
    demo.add_argument("--out", default="out/demo", help="folder for bot.wav and the transcript")
    demo.set_defaults(func=_demo)
    validate = sub.add_parser("validate", help="build a pipeline spec and report problems")
    validate.add_argument("spec")
    validate.set_defaults(func=_validate)
    kinds = sub.add_parser("kinds", help="list the event kinds of this ABI")
    kinds.set_defaults(func=_kinds)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
