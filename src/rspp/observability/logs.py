"""Log lines a platform can index: ``--log-format json``, each with its session's context.

Each record gets the context of the session whose task logged it -- ``session``,
``turn``, ``worker``, ``incarnation`` -- from a context variable that
:func:`bind` sets where a session is started (:func:`rspp.observability.watch`):
asyncio copies the context into every task when it is created, so a session's
node tasks, and the worker's reader and writer for it, carry that session and
no other, with nothing passed around and nothing done per log call unless a
line is actually written. A record that names a field itself (``extra=``, as
the worker's ``SessionLog`` does) keeps its own value; the messages still name
worker, session and token for the text format, which stays as it was.

A JSON line is one object: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``role`` and whichever of the context fields are known, plus
``exception`` with the traceback when there is one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

__all__ = [
    "FORMATS",
    "ContextFilter",
    "JsonFormatter",
    "LogContext",
    "bind",
    "configure_logging",
    "current",
]

#: What ``--log-format`` accepts.
FORMATS = ("text", "json")
#: The context fields, in the order a JSON line shows them.
FIELDS = ("session", "turn", "worker", "incarnation")


@dataclass(frozen=True, slots=True)
class LogContext:
    """Who is logging: a session, and the worker and incarnation that run it, if known.

    ``turn`` is asked only when a line is written: the turn changes, the context does not.
    """

    session: str
    worker: str = ""
    incarnation: int | None = None
    turn: Callable[[], int] | None = None


_CONTEXT: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar(
    "rspp_log_context", default=None
)


def bind(context: LogContext) -> contextvars.Token[LogContext | None]:
    """Log as ``context`` from this task on, and in every task it creates from now."""
    return _CONTEXT.set(context)


def current() -> LogContext | None:
    """The context this task logs with."""
    return _CONTEXT.get()


class ContextFilter(logging.Filter):
    """Put the current :class:`LogContext` on each record that does not name it itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        if context is None:
            return True
        fields = record.__dict__
        fields.setdefault("session", context.session)
        if context.worker:
            fields.setdefault("worker", context.worker)
        if context.incarnation is not None:
            fields.setdefault("incarnation", context.incarnation)
        if context.turn is not None and "turn" not in fields:
            fields["turn"] = context.turn()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def __init__(self, role: str = "") -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.role:
            line["role"] = self.role
        for key in FIELDS:
            value = fields.get(key)
            if value is not None and value != "":
                line[key] = value
        if "incarnation" not in line and fields.get("token") is not None:
            line["incarnation"] = fields["token"]  # the worker's SessionLog calls it token
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


_handler: logging.Handler | None = None


def configure_logging(
    level: str = "info", fmt: str = "text", role: str = "", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Log to stderr (or ``stream``) at ``level``, as ``text`` or ``json`` lines.

    Called again, it replaces the handler it installed before (and no other).
    """
    global _handler
    if fmt not in FORMATS:
        raise ValueError(f"no log format {fmt!r} (have: {', '.join(FORMATS)})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        who = f" {role}" if role else ""
        text = f"%(asctime)s %(levelname)s{who} %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(text))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping().get(level.upper(), logging.INFO))
    _handler = handler
    return handler
