"""A per-turn timeline of a session: how the stages overlapped, and what speculation did.

:class:`Timeline` is a session observer: attach it (``observers=[timeline]``)
and it records when each stage worked on each reply. :meth:`Timeline.exchanges`
groups the recording into exchanges -- one user turn and every reply attempted
for it (speculations included) -- and :func:`render_html` / :func:`render_svg`
draw them: one row per stage, time in milliseconds from the end of the user's
speech, so overlap (the LLM starting before the turn ended, TTS starting
before the LLM finished, audio playing while TTS still synthesizes) is
visible at a glance, as are the moments a speculation started, was confirmed
or discarded, and where a barge-in cut the bot off.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass, field
from pathlib import Path

from rspp.events import Event

__all__ = ["Exchange", "Timeline", "render_html", "render_svg", "write_html"]

ROWS = ("user", "asr", "turn", "llm", "tts", "output")
_LABELS = {
    "user": "user speech",
    "asr": "ASR",
    "turn": "turn manager",
    "llm": "LLM",
    "tts": "TTS",
    "output": "audio out",
}


@dataclass
class Attempt:
    """One reply attempt (committed, or speculative) and its stages' spans (ns)."""

    turn: int
    speculative: bool
    text: str
    root_ns: int
    outcome: str = "pending"  # played | interrupted | confirmed+... | speculation_* | closed
    llm: list[int] = field(default_factory=list)  # first, last
    tts: list[int] = field(default_factory=list)
    out: list[int] = field(default_factory=list)
    confirmed_ns: int | None = None
    ended_ns: int | None = None


@dataclass
class Exchange:
    """One user turn and the replies attempted for it."""

    speech: list[tuple[int, int]] = field(default_factory=list)  # (start, end) per segment
    partials: list[int] = field(default_factory=list)
    finals: list[int] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    pauses: list[tuple[int, str]] = field(default_factory=list)  # (time, "pause"|"resume")
    decided_ns: int | None = None
    user_text: str = ""

    @property
    def reply(self) -> Attempt | None:
        """The attempt that became the reply (committed or confirmed), if any."""
        for attempt in self.attempts:
            if not attempt.speculative or attempt.confirmed_ns is not None:
                return attempt
        return None

    @property
    def zero_ns(self) -> int:
        """The time axis origin: the end of the user's (last) speech segment."""
        ends = [end for _, end in self.speech if end]
        return ends[-1] if ends else (self.attempts[0].root_ns if self.attempts else 0)


class Timeline:
    """Session observer recording stage activity per reply; see the module docstring."""

    def __init__(self) -> None:
        self._done: list[Exchange] = []
        self._current = Exchange()
        self._attempts: dict[int, Attempt] = {}
        self._open_speech: int | None = None

    def __call__(self, event: Event) -> None:
        now = round(asyncio.get_running_loop().time() * 1e9)
        kind = event.kind
        ex = self._current
        if kind == "vad.speech_start":
            self._open_speech = event.origin_ns
        elif kind == "vad.speech_end":
            ex.speech.append((self._open_speech or event.origin_ns, event.origin_ns))
            self._open_speech = None
        elif kind == "asr.partial":
            ex.partials.append(now)
        elif kind == "asr.final":
            ex.finals.append(now)
        elif kind in ("turn.commit", "turn.speculate"):
            attempt = Attempt(
                turn=event.turn,
                speculative=kind == "turn.speculate",
                text=getattr(event, "text", ""),
                root_ns=now,
            )
            self._attempts[event.turn] = attempt
            ex.attempts.append(attempt)
            if kind == "turn.commit":
                self._decide(ex, now, attempt.text)
        elif kind == "turn.confirm":
            confirmed = self._attempts.get(event.turn)
            if confirmed is not None:
                confirmed.confirmed_ns = now
                self._decide(ex, now, confirmed.text)
        elif kind in ("llm.delta", "llm.done", "tts.audio", "tts.done", "audio.out"):
            working = self._attempts.get(event.turn)
            if working is not None:
                span = {"llm": working.llm, "tts": working.tts, "audio": working.out}[
                    kind.split(".")[0]
                ]
                if not span:
                    span.append(now)
                span[1:] = [now]
        elif kind in ("turn.done", "turn.interrupted"):
            ended = self._attempts.get(event.turn)
            if ended is not None:
                ended.ended_ns = now
                ended.outcome = "played" if kind == "turn.done" else getattr(event, "reason", "")
        elif kind in ("control.pause", "control.resume"):
            ex.pauses.append((now, kind.split(".")[1]))

    def _decide(self, ex: Exchange, now: int, text: str) -> None:
        """The user's turn ended: close this exchange (its reply keeps filling in)."""
        ex.decided_ns = now
        ex.user_text = text
        self._done.append(ex)
        self._current = Exchange()

    def exchanges(self) -> list[Exchange]:
        """Every exchange whose user turn ended, in order."""
        return list(self._done)


# --------------------------------------------------------------------------- rendering

_COLORS = {
    "user": "#7a7a7a",
    "reply": "#2f6fd6",
    "spec_hit": "#2a9d4b",
    "spec_lost": "#c9c9c9",
    "asr": "#9b59b6",
}
_W, _LEFT, _ROW_H, _TOP = 900, 110, 26, 34


def render_svg(ex: Exchange, title: str = "", *, after_ms: float = 2500.0) -> str:
    """One exchange as an SVG drawing (self-contained markup).

    The time axis ends ``after_ms`` after the reply's first audio (long replies
    would otherwise squash the part that matters); bars that go on are cut at
    the edge with an arrow.
    """
    zero = ex.zero_ns
    times = [t for pair in ex.speech for t in pair]
    times += ex.partials + ex.finals
    for a in ex.attempts:
        times += [a.root_ns, *a.llm, *a.tts, *a.out]
        times += [t for t in (a.confirmed_ns, a.ended_ns) if t is not None]
    if not times:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>"
    start, end = min(times), max(times)
    reply = ex.reply
    focus = reply.out[0] if reply is not None and reply.out else ex.decided_ns
    if focus is not None:
        end = min(end, focus + int(after_ms * 1e6))
    width_ns = max(end - start, 1)
    scale = (_W - _LEFT - 20) / width_ns

    def x(t: int) -> float:
        return _LEFT + (min(t, end) - start) * scale

    y = {row: _TOP + i * _ROW_H for i, row in enumerate(ROWS)}
    height = _TOP + len(ROWS) * _ROW_H + 30
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{height}' "
        "font-family='sans-serif' font-size='11'>",
        f"<text x='8' y='16' font-size='13' font-weight='bold'>{html.escape(title)}</text>",
    ]
    for row in ROWS:
        out.append(f"<text x='8' y='{y[row] + 15}'>{_LABELS[row]}</text>")
        out.append(
            f"<line x1='{_LEFT}' x2='{_W - 20}' y1='{y[row] + _ROW_H - 2}' "
            f"y2='{y[row] + _ROW_H - 2}' stroke='#eee'/>"
        )

    def bar(row: str, a: int, b: int, color: str, label: str = "", dy: int = 0) -> None:
        if a > end:
            return
        width = max(x(b) - x(a), 2.0)
        out.append(
            f"<rect x='{x(a):.1f}' y='{y[row] + 4 + dy}' width='{width:.1f}' height='{14 - dy}' "
            f"fill='{color}' rx='2'><title>{html.escape(label)}</title></rect>"
        )
        if b > end:  # goes on past the edge
            out.append(f"<text x='{x(end) + 3:.1f}' y='{y[row] + 15}' fill='{color}'>→</text>")

    def mark(row: str, t: int, symbol: str, color: str, label: str) -> None:
        if t > end:
            return
        out.append(
            f"<text x='{x(t) - 4:.1f}' y='{y[row] + 16}' fill='{color}' font-size='14'>"
            f"{symbol}<title>{html.escape(label)}</title></text>"
        )

    for began, ended in ex.speech:
        bar("user", began, ended, _COLORS["user"], f"speech {(ended - began) / 1e6:.0f} ms")
    out.extend(
        f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{y['asr'] + 6}' y2='{y['asr'] + 18}' "
        f"stroke='{_COLORS['asr']}'/>"
        for t in ex.partials
    )
    for t in ex.finals:
        mark("asr", t, "◆", _COLORS["asr"], f"final at {(t - zero) / 1e6:+.0f} ms")
    for a in ex.attempts:
        if a.speculative:
            color = _COLORS["spec_hit"] if a.confirmed_ns is not None else _COLORS["spec_lost"]
            mark("turn", a.root_ns, "▶", color, f"speculate turn {a.turn}: {a.text!r}")
            if a.confirmed_ns is not None:
                mark("turn", a.confirmed_ns, "✔", color, f"confirm turn {a.turn}")
            elif a.ended_ns is not None:
                mark("turn", a.ended_ns, "✖", "#b33", f"{a.outcome} (turn {a.turn})")
        else:
            color = _COLORS["reply"]
            mark("turn", a.root_ns, "●", color, f"commit turn {a.turn}: {a.text!r}")
        if a.llm:  # waiting for the first token (thin), then streaming
            bar("llm", a.root_ns, a.llm[0], color, f"turn {a.turn}: time to first token", dy=8)
        if a.llm and a.tts:  # text is arriving, the first audio is not ready yet
            bar("tts", a.llm[0], a.tts[0], color, f"turn {a.turn}: text in, no audio yet", dy=8)
        for row, points in (("llm", a.llm), ("tts", a.tts), ("output", a.out)):
            if points:
                bar(row, points[0], points[-1], color, f"turn {a.turn} {row}")
        if a.outcome == "barge_in" and a.ended_ns is not None:
            mark("output", a.ended_ns, "✖", "#b33", "barge-in: output cleared")
    for t, what in ex.pauses:
        top = y["output"] + 3
        if what == "pause":  # two bars
            out.append(
                f"<path d='M{x(t) - 4:.1f} {top} h3 v16 h-3 z M{x(t) + 1:.1f} {top} h3 v16 h-3 z' "
                "fill='#c80'><title>output paused: interruption undecided</title></path>"
            )
        else:  # a play triangle
            out.append(
                f"<path d='M{x(t) - 3:.1f} {top} l9 8 l-9 8 z' fill='#c80'>"
                "<title>output resumed</title></path>"
            )
    # Axis: ms from the end of the user's speech.
    axis_y = _TOP + len(ROWS) * _ROW_H + 14
    step = _tick_step(width_ns / 1e6)
    first = int(((start - zero) / 1e6) // step * step)
    tick = first
    while zero + tick * 1e6 <= end:
        t = zero + int(tick * 1e6)
        if t >= start:
            out.append(
                f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{_TOP}' y2='{axis_y - 10}' "
                f"stroke='{'#888' if tick == 0 else '#f0f0f0'}'/>"
            )
            out.append(f"<text x='{x(t) - 10:.1f}' y='{axis_y}'>{tick:+d}</text>")
        tick += step
    out.append(f"<text x='{_W - 190}' y='{axis_y + 12}'>ms from end of user speech</text>")
    out.append("</svg>")
    return "\n".join(out)


def _tick_step(span_ms: float) -> int:
    for step in (50, 100, 200, 250, 500, 1000, 2000, 5000):
        if span_ms / step <= 10:
            return step
    return 10_000


def render_html(exchanges: list[Exchange], title: str = "RSPP session timeline") -> str:
    """A self-contained HTML page with one drawing per exchange and a legend."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222}"
        "figure{margin:0 0 28px}figcaption{font-size:13px;color:#444;margin:4px 0}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        "<p>One row per stage; time in ms from the end of the user's speech. "
        "Blue: the committed reply. Green: a speculation that was confirmed (▶ started, ✔ "
        "confirmed: its audio was released at once). Grey: a speculation that was discarded "
        "or missed (✖). ● a commit; ◆ an ASR final; ticks: partials. Thin bars are waits: the "
        "LLM for its first token, the TTS from the first text to its first audio. Orange bars "
        "/ triangle: output paused / resumed while a barge-in was undecided; a red ✖ on the "
        "output row: barge-in; → the bar goes on past the drawing.</p>",
    ]
    for i, ex in enumerate(exchanges, 1):
        reply = ex.reply
        first_audio = reply.out[0] if reply is not None and reply.out else None
        v2v = (
            ""
            if first_audio is None
            else f" — first audio {(first_audio - ex.zero_ns) / 1e6:+.0f} ms"
        )
        caption = f"Turn {i}: “{html.escape(ex.user_text)}”{v2v}"
        parts.append(f"<figure><figcaption>{caption}</figcaption>")
        parts.append(render_svg(ex, f"turn {i}"))
        parts.append("</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(timeline: Timeline, path: Path, title: str = "RSPP session timeline") -> Path:
    """Write the timeline page of a session."""
    path.write_text(render_html(timeline.exchanges(), title), encoding="utf-8")
    return path
