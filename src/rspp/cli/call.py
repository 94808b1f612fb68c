"""``rspp call URL``: call an RSPP server as a client would (``rspp.client``).

It says the demo caller's lines (or a WAV file) in real time, plays the bot
out with the client's playout model, and reports the conversation and each
reply's latency *as measured at the client*: from the end of the user's speech
to the first sample of the reply played -- the network and the client's
buffering included -- next to the server's own breakdown (``call.latency``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rspp.client import CallRecord, Line
    from rspp.transports.call.wire import AudioFormat

__all__ = ["add_parser", "call", "print_call"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "call", help="call a server (rspp serve) as a client: say a script, play the bot out"
    )
    parser.add_argument(
        "url", help="ws://HOST:PORT/v1/call, or the http://HOST:PORT/?token=... rspp serve prints"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE.wav", help="say this WAV file (16-bit PCM)")
    source.add_argument(
        "--script", choices=["demo"], default="demo", help="say the demo caller's lines (default)"
    )
    parser.add_argument("--token", default="", help="call token (default: the URL's, RSPP_TOKEN)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/bot.wav and DIR/call.json")
    parser.add_argument("--pipeline", default="", help="the server's pipeline to call")
    parser.add_argument(
        "--output-rate", type=int, default=16000, help="sample rate to receive the bot's audio at"
    )
    parser.add_argument(
        "--max-wait", type=float, default=60.0, help="seconds to wait for a reply at most"
    )
    parser.add_argument(
        "--reconnects",
        type=int,
        default=5,
        help="reconnect by itself this many times when the connection is lost (0: never)",
    )
    parser.add_argument(
        "--tail",
        type=float,
        help="after the last line, listen until the bot was quiet this long (s;"
        " default 2 for a WAV, which may hold several utterances, else 0.5)",
    )
    parser.set_defaults(func=call)


def call(args: argparse.Namespace) -> int:
    """The ``rspp call`` command (``args`` as :func:`add_parser` makes them)."""
    from rspp.client import CallRefused, demo_lines, wav_line
    from rspp.transports.call.wire import AudioFormat

    console = _console()
    try:
        if args.input:
            line, rate, channels = wav_line(Path(args.input))
            lines, fmt = [line], AudioFormat(sample_rate=rate, channels=channels)
            tail_s = 2.0  # a file may hold more than one utterance: wait for quiet
        else:
            lines, fmt = demo_lines(), AudioFormat(sample_rate=16000)
            tail_s = 0.5
        if args.tail is not None:
            tail_s = args.tail
        record, failed = asyncio.run(_call(args, console, lines, fmt, tail_s * 1000))
    except CallRefused as exc:
        hint = " (give --token, or set RSPP_TOKEN)" if exc.code == 4401 else ""
        print(f"rspp call: the server refused the call: {exc}{hint}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TimeoutError) as exc:
        print(f"rspp call: {exc}", file=sys.stderr)
        return 1
    print_call(console, record)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bot.wav").write_bytes(record.bot_wav())
        (out / "call.json").write_text(json.dumps(record.to_json(), indent=2) + "\n")
        console.print(f"wrote {out / 'bot.wav'} and {out / 'call.json'}")
    if failed:
        print(f"rspp call: {failed}", file=sys.stderr)
        return 1
    return 0


async def _call(
    args: argparse.Namespace,
    console: Console,
    lines: list[Line],
    fmt: AudioFormat,
    tail_ms: float,
) -> tuple[CallRecord, str]:
    """The call; what it recorded, and why it stopped early ("" if it did not)."""
    from rspp.client import Call, Caller
    from rspp.transports.call.wire import AudioFormat

    output = AudioFormat(sample_rate=args.output_rate)
    async with Call.connect(
        args.url,
        token=args.token,
        input=fmt,
        output=output,
        pipeline=args.pipeline,
        reconnect_attempts=args.reconnects,
    ) as call:
        console.print(
            f"[bold]rspp call[/bold] {call.url}: session {call.session}"
            f" (pipeline {call.record.pipeline}), {len(lines)} line(s)"
        )
        try:
            with console.status("In the call..."):
                await Caller(call, lines, max_wait_s=args.max_wait, tail_ms=tail_ms).play()
        except TimeoutError as exc:
            failed = str(exc)  # the call so far is still worth a report
        else:
            failed = ""
    return call.record, failed


def print_call(console: Console, record: CallRecord) -> None:
    """The conversation as the client heard it, then the per-turn latency table."""
    for turn in record.replies:
        if turn.user:
            console.print(f"[cyan]user[/cyan]  {turn.user}")
        heard = turn.heard.strip() or ("(audio)" if turn.played_ms else "")
        if turn.interrupted:
            console.print(f"[green]bot[/green]   {heard} [red]<barge-in>[/red]")
            unheard = turn.reply[len(turn.heard) :].strip() if turn.reply else ""
            if unheard:
                console.print(f"      [dim](generated, never heard: {unheard!r})")
        else:
            console.print(f"[green]bot[/green]   {heard or turn.reply.strip()}")
    table = Table(
        title="Per-turn latency in ms. Heard after: end of speech -> first audio played, at the"
        " client; the rest as the server measured it (EOT: end of turn decided)"
    )
    columns = ("turn", "heard after", "server V2V", "VAD", "ASR", "EOT", "LLM TTFT", "TTS TTFA")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("played")
    for turn in record.replies:
        server = turn.server
        outcome = f"{turn.played_ms:,.0f} ms" + (", interrupted" if turn.interrupted else "")
        table.add_row(
            str(turn.turn),
            _fmt(turn.latency_ms),
            _fmt(server.get("v2v_ms")),
            _fmt(server.get("vad_ms")),
            _fmt(server.get("asr_ms")),
            _fmt(server.get("endpoint_ms")),
            _fmt(server.get("llm_ttft_ms")),
            _fmt(server.get("tts_ttfa_ms")),
            outcome,
        )
    console.print(table)
    if record.resumes:
        console.print(f"Reconnected {record.resumes} time(s).")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not wrap the table at 80 columns
        console = Console(width=130)
    return console
