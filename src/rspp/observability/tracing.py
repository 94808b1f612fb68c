"""OpenTelemetry traces of a session: a span per turn, a child span per stage.

Off by default, and free when off: :func:`rspp.observability.watch` attaches a
:class:`TurnTracer` to a session only once :func:`enable` (``--trace console``
or ``--trace otlp``) or :func:`use` has given this process a tracer, so a
session of a process that never traces has not one more observer, and the
per-frame path is exactly what it was. OpenTelemetry itself is imported only
then.

When on, the tracer is one more session observer (``observers=[tracer]``), as
:class:`~rspp.observability.timeline.Timeline` is, and it does as little as it
can per event: one dictionary look-up by kind (a miss for ``audio.in``), and
for the kinds that mark a stage, a timestamp. No span is open while the call
goes on: when a turn's reply ends (played out, interrupted, or the session
closes) the whole turn is written at once, each span with its explicit start
and end time, and the SDK's batch processor exports it from its own thread.

A *turn* here is an exchange: the user's speech and the reply to it. Its span
``rspp.turn`` (attributes ``rspp.session.id``, ``rspp.turn`` -- the reply's turn
number --, ``rspp.pipeline``, ``rspp.incarnation``, ``rspp.worker`` when run by
one, ``rspp.outcome``) has the children

=================  ========================================================
``rspp.vad``       a segment of the user's speech (the VAD's start to end)
``rspp.asr``       the recogniser: the start of speech to its last final
``rspp.llm.ttft``  the reply's start (commit, or speculation) to the first token
``rspp.llm``       the reply's start to the LLM's end
``rspp.tts.ttfa``  the first token to the first synthesized audio
``rspp.tts``       the first token to the TTS's end
``rspp.output``    the first audio sent to the caller to the reply's end
=================  ========================================================

and the events ``rspp.speculation.started`` / ``.confirmed`` / ``.discarded``
(``rspp.turn``: the speculative reply's own number; ``rspp.reason``),
``rspp.barge_in`` (the user cut the reply off: ``rspp.delivered_ms``) and
``rspp.output.paused`` / ``.resumed`` (the turn manager held the output while it
decided whether talk over the bot was an interruption). A stage that did not
happen (no first token before a barge-in) has no span.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import TYPE_CHECKING, Any

from rspp.events import Event

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from rspp.kernel.session import Session

__all__ = ["TurnTracer", "enable", "tracer", "use"]

#: Speech segments and events a turn keeps at most (a long monologue, speculations on it).
MAX_MARKS = 256
_FAILED = frozenset({"failed", "stalled"})
#: The OTLP exporters, the first one installed is used: HTTP (the ``otlp`` extra), gRPC.
_OTLP = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)

_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The tracer sessions of this process are traced with, or None: tracing is off."""
    return _tracer


def use(new: Tracer | None) -> None:
    """Trace the sessions :func:`~rspp.observability.watch` sees from now on with ``new``
    (None: stop). :func:`enable` calls it; tests give their own provider's tracer."""
    global _tracer
    _tracer = new


def enable(mode: str, *, role: str = "", exporter: SpanExporter | None = None) -> TracerProvider:
    """Turn tracing on for this process: ``console`` (JSON spans on stdout) or ``otlp``.

    ``otlp`` sends to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``)
    as the standard exporter reads it, over HTTP (the ``otlp`` extra), else gRPC.
    ``OTEL_SERVICE_NAME`` names the service (default ``rspp``); ``role`` (serve,
    worker) becomes ``rspp.role``. The provider is also made OpenTelemetry's
    global one, and flushes at exit. ``exporter`` replaces the one ``mode`` names.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = exporter or _exporter(mode)
    attributes: dict[str, str] = {"rspp.role": role} if role else {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "rspp"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use(provider.get_tracer("rspp"))
    return provider


def _exporter(mode: str) -> SpanExporter:
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if mode == "otlp":
        for module in _OTLP:  # imported by name: the otlp extra is optional
            try:
                found = importlib.import_module(module)
            except ImportError:
                continue
            exporter: SpanExporter = found.OTLPSpanExporter()
            return exporter
        raise RuntimeError("--trace otlp needs an OTLP exporter: pip install 'rspp[otlp]'")
    raise ValueError(f"no trace exporter {mode!r} (have: console, otlp)")


# --------------------------------------------------------------------------- the observer


class _Attempt:
    """One reply attempt (committed, or speculative): when each stage first/last worked."""

    __slots__ = (
        "ended",
        "exchange",
        "llm_done",
        "llm_first",
        "out_first",
        "outcome",
        "root",
        "speculative",
        "tts_done",
        "tts_first",
        "turn",
    )

    def __init__(self, exchange: _Exchange, turn: int, speculative: bool, root: int) -> None:
        self.exchange = exchange
        self.turn = turn
        self.speculative = speculative
        self.root = root
        self.llm_first = self.llm_done = self.tts_first = self.tts_done = 0
        self.out_first = self.ended = 0
        self.outcome = ""


class _Exchange:
    """One user turn and the reply to it (session-time nanoseconds)."""

    __slots__ = ("asr_end", "events", "open_speech", "reply", "speech")

    def __init__(self) -> None:
        self.speech: list[tuple[int, int]] = []
        self.open_speech = 0
        self.asr_end = 0
        self.reply: _Attempt | None = None
        self.events: list[tuple[str, int, dict[str, Any]]] = []

    def note(self, name: str, t: int, attributes: dict[str, Any]) -> None:
        if len(self.events) < MAX_MARKS:
            self.events.append((name, t, attributes))


class TurnTracer:
    """Session observer writing one trace per turn; see the module docstring.

    ``tracer`` defaults to the process's (:func:`use`); ``worker`` names the
    worker that runs the session, if one does.
    """

    def __init__(self, session: Session, tracer: Tracer | None = None, *, worker: str = "") -> None:
        chosen = tracer or _tracer
        if chosen is None:
            raise RuntimeError("tracing is off: enable() it, or give a tracer")
        self._tracer = chosen
        self._session = session
        self._now = session.clock.now_ns
        self._worker = worker
        #: Wall-clock minus session time (ns), fixed at the first turn written.
        self._shift: int | None = None
        self._current = _Exchange()
        self._attempts: dict[int, _Attempt] = {}
        #: The exchange whose reply is (or was last) going out, until it is written.
        self._playing: _Exchange | None = None
        self._on: dict[str, Callable[[Event], None]] = {
            "vad.speech_start": self._speech_start,
            "vad.speech_end": self._speech_end,
            "asr.final": self._asr_final,
            "turn.commit": self._root,
            "turn.speculate": self._root,
            "turn.confirm": self._confirm,
            "llm.delta": self._llm_delta,
            "llm.done": self._llm_done,
            "tts.audio": self._tts_audio,
            "tts.done": self._tts_done,
            "audio.out": self._audio_out,
            "turn.done": self._ended,
            "turn.interrupted": self._ended,
            "control.pause": self._output_held,
            "control.resume": self._output_held,
            "session.end": self._session_end,
        }

    def __call__(self, event: Event) -> None:
        handle = self._on.get(event.kind)
        if handle is not None:
            handle(event)

    # -- recording ---------------------------------------------------------------------------

    def _speech_start(self, event: Event) -> None:
        ex = self._current
        if not ex.speech and not ex.open_speech:
            ex.asr_end = 0  # a final before this turn's speech is an earlier utterance's
        ex.open_speech = event.origin_ns

    def _speech_end(self, event: Event) -> None:
        ex = self._current
        if len(ex.speech) < MAX_MARKS:
            ex.speech.append((ex.open_speech or event.origin_ns, event.origin_ns))
        ex.open_speech = 0

    def _asr_final(self, event: Event) -> None:
        self._current.asr_end = self._now()

    def _root(self, event: Event) -> None:
        ex = self._current
        now = self._now()
        attempt = _Attempt(ex, event.turn, event.kind == "turn.speculate", now)
        self._attempts[event.turn] = attempt
        if attempt.speculative:
            ex.note("rspp.speculation.started", now, {"rspp.turn": event.turn})
        else:
            self._decide(attempt)

    def _confirm(self, event: Event) -> None:
        attempt = self._attempts.get(event.turn)
        if attempt is not None:
            attempt.exchange.note(
                "rspp.speculation.confirmed", self._now(), {"rspp.turn": event.turn}
            )
            self._decide(attempt)

    def _decide(self, attempt: _Attempt) -> None:
        """The user's turn ended: this attempt is its reply; the next speech is a new turn."""
        ex = attempt.exchange
        ex.reply = attempt
        if ex is self._current:
            self._current = _Exchange()
        self._playing = ex

    def _llm_delta(self, event: Event) -> None:
        attempt = self._attempts.get(event.turn)
        if attempt is not None and not attempt.llm_first:
            attempt.llm_first = self._now()

    def _llm_done(self, event: Event) -> None:
        attempt = self._attempts.get(event.turn)
        if attempt is not None:
            attempt.llm_done = self._now()

    def _tts_audio(self, event: Event) -> None:
        attempt = self._attempts.get(event.turn)
        if attempt is not None and not attempt.tts_first:
            attempt.tts_first = self._now()

    def _tts_done(self, event: Event) -> None:
        attempt = self._attempts.get(event.turn)
        if attempt is not None:
            attempt.tts_done = self._now()

    def _audio_out(self, event: Event) -> None:
        attempt = self._attempts.get(event.turn)
        if attempt is not None and not attempt.out_first:
            attempt.out_first = self._now()

    def _ended(self, event: Event) -> None:
        attempt = self._attempts.pop(event.turn, None)
        if attempt is None:
            return
        now = self._now()
        attempt.ended = now
        ex = attempt.exchange
        if event.kind == "turn.done":
            attempt.outcome = "played"
        else:
            attempt.outcome = getattr(event, "reason", "") or "interrupted"
        if ex.reply is attempt:
            if attempt.outcome == "barge_in":
                delivered = float(getattr(event, "delivered_ms", 0.0))
                ex.note("rspp.barge_in", now, {"rspp.delivered_ms": delivered})
            self._write(ex, now)
        else:  # a speculation that was not the reply
            reason = {"rspp.turn": attempt.turn, "rspp.reason": attempt.outcome}
            ex.note("rspp.speculation.discarded", now, reason)

    def _output_held(self, event: Event) -> None:
        now = self._now()
        reason = getattr(event, "reason", "")
        if self._playing is not None:
            name = "rspp.output.paused" if event.kind == "control.pause" else "rspp.output.resumed"
            self._playing.note(name, now, {"rspp.reason": reason})
        if reason == "not_an_interruption":
            # The turn manager forgets that utterance (a backchannel): so does the trace.
            self._current.speech.clear()
            self._current.asr_end = 0

    def _session_end(self, event: Event) -> None:
        """Write the turns whose reply had not ended (the session closed, or moved)."""
        now = self._now()
        reason = getattr(event, "reason", "") or "closed"
        for attempt in list(self._attempts.values()):
            ex = attempt.exchange
            if ex.reply is attempt:
                attempt.ended, attempt.outcome = now, reason
                self._write(ex, now)
        self._attempts.clear()
        self._current = _Exchange()
        self._playing = None

    # -- writing -----------------------------------------------------------------------------

    def _write(self, ex: _Exchange, now: int) -> None:
        """The turn's spans, at once, with explicit times (session time shifted to wall time)."""
        from opentelemetry import trace

        reply = ex.reply
        assert reply is not None
        if self._playing is ex:
            self._playing = None
        end = reply.ended or now
        stages: list[tuple[str, int, int]] = [("rspp.vad", a, b) for a, b in ex.speech]
        if ex.speech and ex.asr_end >= ex.speech[0][0]:
            stages.append(("rspp.asr", ex.speech[0][0], ex.asr_end))
        if reply.llm_first:
            stages.append(("rspp.llm.ttft", reply.root, reply.llm_first))
        stages.append(("rspp.llm", reply.root, reply.llm_done or end))
        if reply.llm_first:
            if reply.tts_first:
                stages.append(("rspp.tts.ttfa", reply.llm_first, reply.tts_first))
            stages.append(("rspp.tts", reply.llm_first, reply.tts_done or end))
        if reply.out_first:
            stages.append(("rspp.output", reply.out_first, end))
        start = min([reply.root, *(a for _, a, _ in stages), *(t for _, t, _ in ex.events)])
        end = max([end, *(b for _, _, b in stages), *(t for _, t, _ in ex.events)])
        if self._shift is None:  # once: turns keep their session-time order and spacing
            self._shift = time.time_ns() - self._now()
        shift = self._shift
        session = self._session
        attributes: dict[str, Any] = {
            "rspp.session.id": session.id,
            "rspp.turn": reply.turn,
            "rspp.pipeline": session.pipeline.name,
            "rspp.incarnation": session.outbound.incarnation,
            "rspp.outcome": reply.outcome,
            "rspp.speculative": reply.speculative,
        }
        if self._worker:
            attributes["rspp.worker"] = self._worker
        if ex.speech and reply.out_first:
            attributes["rspp.first_audio_ms"] = (reply.out_first - ex.speech[-1][1]) / 1e6
        tracer = self._tracer
        root = tracer.start_span("rspp.turn", start_time=start + shift, attributes=attributes)
        if reply.outcome in _FAILED:
            root.set_status(trace.Status(trace.StatusCode.ERROR, reply.outcome))
        parent = trace.set_span_in_context(root)
        for name, a, b in stages:
            span = tracer.start_span(name, context=parent, start_time=a + shift)
            span.end(end_time=max(a, b) + shift)
        for name, t, attrs in ex.events:
            root.add_event(name, attrs, timestamp=t + shift)
        root.end(end_time=end + shift)
