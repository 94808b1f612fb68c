"""The ``rspp`` command line.

``rspp demo``            a real voice agent, all models local, with a scripted caller
``rspp demo --spec S``   the same call through another pipeline (e.g. local_streaming.toml)
``rspp demo --fake``     the same kind of call with the test kit's fake models
``rspp demo --virtual``  the fake call in virtual time (instant)
``rspp run SPEC --input FILE.wav``   any pipeline over a WAV file
``rspp validate SPEC``   build a spec and print its plan or every problem in it
``rspp kinds``           the event kinds of the ABI
``rspp serve-audio``     a local OpenAI-compatible audio server (Whisper, Piper)
``rspp serve [SPEC ...]``  calls over the network: the browser page, WebSocket, Twilio
``rspp call URL --input FILE.wav``  call a server as a caller (or ``--script demo``)
``rspp cluster``         a local cluster: Redis, a gateway, dispatchers, workers
``rspp gateway | worker | dispatcher``   one role of a cluster (``rspp.cli.cluster``)
``rspp sessions move ID [--to W]``       move a live session to another worker
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.status import Status
from rich.table import Table

from rspp.cli import call as call_cli
from rspp.cli import cluster as cluster_cli
from rspp.cli import serve as serve_cli
from rspp.events import known_kinds
from rspp.kernel import BuildError, build, load_spec
from rspp.report import SessionReport, write_outputs

__all__ = ["main"]


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not wrap the table at 80 columns
        console = Console(width=130)
    return console


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _print_report(console: Console, result: SessionReport) -> None:
    for turn in result.turns:
        console.print(f"[cyan]user[/cyan]  {turn.user}")
        if turn.interrupted:
            console.print(f"[green]bot[/green]   {turn.heard.strip()} [red]<barge-in>[/red]")
            unheard = turn.reply[len(turn.heard) :].strip()
            if unheard:
                console.print(f"      [dim](generated, never heard: {unheard!r})")
        else:
            console.print(f"[green]bot[/green]   {turn.reply.strip()}")
    table = Table(
        title="Per-turn latency in ms (EOT: end of turn decided; V2V: voice-to-voice; kernel: µs)"
    )
    for column in ("turn", "VAD", "ASR", "EOT", "LLM TTFT", "TTS TTFA", "kernel µs", "V2V"):
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


def _write(console: Console, result: SessionReport, out: str | None, title: str) -> None:
    if out:
        for path in write_outputs(result, Path(out), title):
            console.print(f"wrote {path}")


def _demo(args: argparse.Namespace) -> int:
    console = _console()
    if args.fake or args.virtual:
        from rspp.demo import run_demo

        mode = "virtual time" if args.virtual else "real time"
        console.print(f"[bold]RSPP demo[/bold] with fake models ({mode}).")
        console.print(
            "The models are the test kit's fakes with realistic latency profiles; the VAD and\n"
            "the turn manager (end of turn, barge-in decisions, speculation) are real.\n"
        )
        with console.status("Talking to the bot..."):
            result = run_demo(virtual=args.virtual)
    else:
        from rspp.agent import LOCAL_SPEC, local_pipeline, run_demo_call

        try:
            pipeline = local_pipeline(Path(args.spec) if args.spec else None)
        except BuildError as exc:
            print(f"{args.spec}: {exc}", file=sys.stderr)
            return 1
        console.print("[bold]RSPP demo[/bold]: a real voice agent, every model local, on the CPU.")
        console.print(f"Pipeline {args.spec or LOCAL_SPEC}:")
        for plan in pipeline.nodes:
            console.print(f"  {plan.name:<8} {plan.type_name}")
        console.print(
            "The LLM is Gemma 3 270M, a small demo model: expect simple answers. A scripted\n"
            "caller plays four recorded questions and interrupts the second answer.\n"
        )
        with console.status("Loading models...") as status:
            result = asyncio.run(run_demo_call(pipeline, status=_progress(console, status)))
    _print_report(console, result)
    _write(console, result, args.out, "RSPP demo call")
    return 0


def _progress(console: Console, status: Status) -> Callable[[str], None]:
    """Model loading and call progress: finished steps as lines, the current one on the spinner."""

    def update(message: str) -> None:
        if message.startswith(("loaded", "models loaded")):
            console.print(f"  {message}")
        else:
            status.update(message[:1].upper() + message[1:] + "...")

    return update


def _run(args: argparse.Namespace) -> int:
    from rspp.agent import read_wav, run_file

    console = _console()
    try:
        pipeline = build(load_spec(args.spec))
    except BuildError as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return 1
    audio = read_wav(Path(args.input), pipeline.spec.audio.sample_rate)
    console.print(f"[bold]rspp run[/bold] {args.spec} < {args.input} ({len(audio) / 32000:.1f} s)")
    with console.status("Loading models...") as status:
        result = asyncio.run(run_file(pipeline, audio, status=_progress(console, status)))
    _print_report(console, result)
    _write(console, result, args.out, f"rspp run {args.spec}")
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


def _serve_audio(args: argparse.Namespace) -> int:
    from rspp.serve.openai_audio import serve

    serve(args.host, args.port, cpu_threads=args.threads)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rspp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo voice agent with a scripted caller")
    demo.add_argument("--fake", action="store_true", help="fake models instead of real ones")
    demo.add_argument("--virtual", action="store_true", help="fake models in virtual time")
    demo.add_argument(
        "--spec", help="another pipeline spec for the call (default: rspp/pipelines/local.toml)"
    )
    demo.add_argument("--out", default="out/demo", help="folder for the call's files")
    demo.set_defaults(func=_demo)
    run = sub.add_parser("run", help="run a pipeline spec over a WAV file")
    run.add_argument("spec")
    run.add_argument("--input", required=True, help="a 16-bit PCM WAV file")
    run.add_argument("--out", default="out/run", help="folder for the call's files")
    run.set_defaults(func=_run)
    validate = sub.add_parser("validate", help="build a pipeline spec and report problems")
    validate.add_argument("spec")
    validate.set_defaults(func=_validate)
    kinds = sub.add_parser("kinds", help="list the event kinds of this ABI")
    kinds.set_defaults(func=_kinds)
    serve_audio = sub.add_parser(
        "serve-audio", help="serve Whisper and Piper over the OpenAI audio API"
    )
    serve_audio.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_audio.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve_audio.add_argument("--threads", type=int, default=2, help="CPU threads for Whisper")
    serve_audio.set_defaults(func=_serve_audio)
    serve_cli.add_parser(sub)
    call_cli.add_parser(sub)
    cluster_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
