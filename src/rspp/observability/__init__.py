"""Seeing what a session did: the per-turn timeline, traces, and log lines with context.

:func:`watch` is what a host calls for each session it starts: the session's
tasks log with its context (:mod:`~rspp.observability.logs`) and, when this
process traces (:mod:`~rspp.observability.tracing`), a tracer observes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rspp.observability import logs, tracing
from rspp.observability.logs import LogContext, configure_logging
from rspp.observability.timeline import Exchange, Timeline, render_html, render_svg, write_html

if TYPE_CHECKING:
    from rspp.kernel.session import Session

__all__ = [
    "Exchange",
    "LogContext",
    "Timeline",
    "configure_logging",
    "render_html",
    "render_svg",
    "watch",
    "write_html",
]


def watch(session: Session, *, worker: str = "", incarnation: int | None = None) -> None:
    """Observe ``session``: call it before ``session.start()``, in the task that owns it.

    Its tasks copy this task's context when they start, so they log as this
    session from then on (this task too). Tracing off, nothing is attached.
    """
    turns = session.turns
    logs.bind(
        LogContext(
            session.id,
            worker=worker,
            incarnation=incarnation,
            turn=lambda: turns.active or turns.fence,
        )
    )
    if tracing.tracer() is not None:
        session.observe(tracing.TurnTracer(session, worker=worker))
