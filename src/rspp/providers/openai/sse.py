"""A Server-Sent Events decoder, sans I/O: fed lines, it returns events.

It follows the WHATWG ``text/event-stream`` rules that matter to a streaming
API: ``data:`` lines accumulate (joined by newlines) until a blank line
dispatches the event; ``event:`` names it; lines starting with ``:`` are
comments (servers send them as keep-alive pings); one space after the colon is
dropped. Two leniencies, both counted rather than fatal, because a reply that
is half-way out is worth more than strictness: a line with a field the spec
does not know is skipped and counted in ``skipped``, and an event still
pending when the stream ends is dispatched by :meth:`SseDecoder.end` (the spec
would discard it).

Lines come from :class:`LineSplitter`, not from a generic line reader: SSE
ends lines with CRLF, LF or CR and nothing else, while ``str.splitlines``
(and so ``httpx.Response.aiter_lines``) also breaks at U+2028, U+0085 and
friends, which a server writing raw UTF-8 JSON leaves unescaped inside a
token -- cutting that chunk in two.

This module knows nothing of HTTP or JSON; :mod:`rspp.providers.openai.chat`
feeds it the bytes off the wire and interprets the events.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["LineSplitter", "SseDecoder", "SseEvent"]

_EOL = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Turns UTF-8 bytes, in pieces of any size, into lines without their terminators."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""  # the start of a line whose end has not come yet
        self._after_cr = False  # a piece ended with CR: an LF starting the next one is its pair

    def feed(self, data: bytes) -> list[str]:
        """Take the next piece of the stream; return the lines it completes."""
        return self._split(self._utf8.decode(data))

    def end(self) -> list[str]:
        """The stream ended: return its last line if it had no terminator."""
        lines = self._split(self._utf8.decode(b"", final=True))
        if self._tail:
            lines.append(self._tail)
            self._tail = ""
        return lines

    def _split(self, text: str) -> list[str]:
        if not text:
            return []
        if self._after_cr and text[0] == "\n":
            text = text[1:]
        self._after_cr = text.endswith("\r")
        lines = _EOL.split(self._tail + text)
        self._tail = lines.pop()
        return lines


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``"message"`` unless named) and its data."""

    data: str
    event: str = "message"
    id: str | None = None


class SseDecoder:
    """Turns lines (without their line terminators) into :class:`SseEvent` s."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._first = True
        #: Lines skipped because their field is not an SSE field (a garbled line, typically).
        self.skipped = 0
        #: The server's requested reconnection delay (``retry:``), in ms; unused by one-shot APIs.
        self.retry_ms: int | None = None

    def feed(self, line: str) -> SseEvent | None:
        """Take one line; return the event that a blank line completes, else None."""
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alive
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():  # "²".isdigit() too
                self.retry_ms = int(value)
        else:
            self.skipped += 1
        return None

    def end(self) -> SseEvent | None:
        """The stream ended: dispatch an event whose closing blank line never came."""
        return self._dispatch()

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(data="\n".join(data), event=event or "message", id=self._last_id)
