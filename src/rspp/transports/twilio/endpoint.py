"""The Twilio endpoint: two ASGI routes, a thin shell around the sans-I/O ``MediaStream``.

* ``POST /twilio/voice`` -- the number's voice webhook. It checks
  ``X-Twilio-Signature`` (403 when it is wrong, or when no auth token is
  configured: an endpoint that cannot tell Twilio from anyone else answers
  no one) and answers TwiML that connects the call to a bidirectional stream:
  ``<Connect><Stream url="wss://HOST/twilio/stream">``.
* ``WebSocket /twilio/stream`` -- the stream. Its handshake is signed too.
  On ``start`` it opens a session on the :class:`~rspp.transports.SessionHost`
  and runs two tasks under one ``asyncio.TaskGroup``: the caller's side
  (μ-law media -> ``audio.in`` at the pipeline's rate, DTMF -> ``user.dtmf``,
  echoed marks -> ``port.report_playback``) and the bot's side (``audio.out``
  -> 20 ms μ-law ``media`` frames and a ``mark`` per chunk, ``control.clear_buffer``
  -> ``clear``). ``stop`` or a dropped socket closes the session; the end of
  the session closes the socket (Twilio then goes on with the call's TwiML).

The endpoint talks to sessions only through :class:`~rspp.transports.SessionPort`.
A bad frame (malformed JSON, an unknown event, media before ``start``,
garbage base64, input the session refuses) is logged, counted in
:attr:`TwilioEndpoint.counts` (and passed to the ``metrics`` hook), and
skipped: it never ends the call.

URLs: Twilio signs the URL it requested. Behind a proxy or a tunnel the app
does not see that URL, so give ``public_url`` (e.g. ``https://voice.example.com``,
with a path prefix if the proxy strips one): the signed URL is then
``public_url`` + the request's path and query, and the stream's is
``wss://`` + its host and prefix + the stream route's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from rspp.events import AudioIn, AudioOut, ClearBuffer, Event, TurnDone, TurnInterrupted, UserDtmf
from rspp.kernel import InvalidInput, RsppError, SessionClosed
from rspp.transports.metrics import DropExport
from rspp.transports.port import SessionHost, SessionPort
from rspp.transports.twilio.audio import Inbound, Outbound
from rspp.transports.twilio.protocol import (
    Dtmf,
    MarkCleared,
    Media,
    MediaStream,
    Played,
    ProtocolError,
    Start,
    State,
    Stop,
)
from rspp.transports.twilio.signature import SIGNATURE_HEADER, validate_signature

__all__ = ["Speaker", "TwilioEndpoint", "twilio_routes"]

log = logging.getLogger("rspp.transports.twilio")

#: The TwiML ``<Parameter>`` elements: these webhook parameters, passed on to the stream's
#: ``start.customParameters``.
FORWARDED_PARAMS: Final = ("From", "To")

# WebSocket close codes.
_POLICY = 1008
_UNSUPPORTED = 1003
_TRY_LATER = 1013


def twilio_routes(
    host: SessionHost,
    *,
    auth_token: str | None,
    public_url: str | None = None,
    pipeline: str = "",
    metrics: Callable[[str], None] | None = None,
    drops: Callable[[], DropExport] | None = None,
) -> list[BaseRoute]:
    """The routes of a Twilio endpoint on ``host`` (see :class:`TwilioEndpoint`)."""
    return TwilioEndpoint(
        host,
        auth_token=auth_token,
        public_url=public_url,
        pipeline=pipeline,
        metrics=metrics,
        drops=drops,
    ).routes


class Speaker:
    """What goes to Twilio for each event a session's port yields (pure).

    One reply at a time is being encoded: a new reply's first frame, or the
    reply's ``turn.done``, flushes the one before (the last 20 ms frame padded
    with silence); ``control.clear_buffer`` drops it and asks for a ``clear``;
    an interrupted reply is dropped.
    """

    __slots__ = ("_audio", "_stream", "_turn")

    def __init__(self, stream: MediaStream, rate: int) -> None:
        self._stream = stream
        self._audio = Outbound(rate)
        self._turn: int | None = None

    def __call__(self, event: Event) -> list[str]:
        if isinstance(event, AudioOut):
            if event.turn <= self._stream.cleared_through:
                return []
            frames = self._end() if self._turn not in (None, event.turn) else []
            self._turn = event.turn
            return frames + self._stream.send_audio(event.turn, self._audio.encode(event.pcm))
        if isinstance(event, ClearBuffer):
            if self._turn is not None and self._turn <= event.turn:
                self._drop()
            clear = self._stream.clear(event.turn)
            return [clear] if clear else []
        if isinstance(event, TurnDone) and event.turn == self._turn:
            return self._end()
        if isinstance(event, TurnInterrupted) and event.turn == self._turn:
            self._drop()
        return []

    def _end(self) -> list[str]:
        turn, self._turn = self._turn, None
        return [] if turn is None else self._stream.send_audio(turn, self._audio.flush())

    def _drop(self) -> None:
        self._turn = None
        self._audio.reset()


class TwilioEndpoint:
    """Twilio's voice webhook and Media Streams for the sessions of ``host``.

    ``counts`` holds what went wrong, by reason (``protocol.<reason>``,
    ``rejected.<kind>``, ``forbidden``, ``unsupported_format``,
    ``session_refused``), ``calls`` and ``marks_cleared`` (echoes a clear
    caused, not counted as played); ``metrics`` is called with each reason as
    it is counted. ``drops`` makes the exporter of a session's drop counters
    (the server's ``rspp_session_dropped``), updated when each call ends.
    """

    def __init__(
        self,
        host: SessionHost,
        *,
        auth_token: str | None,
        public_url: str | None = None,
        pipeline: str = "",
        metrics: Callable[[str], None] | None = None,
        drops: Callable[[], DropExport] | None = None,
    ) -> None:
        self.host = host
        self.pipeline = pipeline
        self.counts: Counter[str] = Counter()
        self._token = auth_token or None
        self._public = public_url.rstrip("/") if public_url else None
        self._metrics = metrics
        self._drops = drops

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/twilio/voice", self.voice, methods=["POST"], name="twilio_voice"),
            WebSocketRoute("/twilio/stream", self.stream, name="twilio_stream"),
        ]

    def count(self, reason: str) -> bool:
        """Count one ``reason``; True when it is worth a log line (the 1st, 2nd, 4th, 8th...).

        A peer that sends garbage fifty times a second must not flood the log.
        """
        n = self.counts[reason] = self.counts[reason] + 1
        if self._metrics is not None:
            self._metrics(reason)
        return n & (n - 1) == 0

    # -- the webhook ----------------------------------------------------------------------

    async def voice(self, request: Request) -> Response:
        form = await request.form()
        params = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
        url = self._signed_url(request.url.scheme, request.url.netloc, request.url.path)
        if request.url.query:
            url += "?" + request.url.query
        if not validate_signature(self._token, request.headers.get(SIGNATURE_HEADER), url, params):
            if self.count("forbidden"):
                log.warning("twilio: refused a webhook request with no valid signature (%s)", url)
            return PlainTextResponse("invalid or missing X-Twilio-Signature", status_code=403)
        stream_path = request.url_for("twilio_stream").path
        stream_url = self._stream_url(request.url.netloc, stream_path)
        values = dict(params)
        parameters = "".join(
            f"<Parameter name={quoteattr(name)} value={quoteattr(values[name])}/>"
            for name in FORWARDED_PARAMS
            if values.get(name)
        )
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Response><Connect><Stream url={quoteattr(stream_url)}>{parameters}"
            "</Stream></Connect></Response>"
        )
        return Response(twiml, media_type="text/xml")

    def _signed_url(self, scheme: str, netloc: str, path: str) -> str:
        if self._public is not None:
            return self._public + path
        return f"{scheme}://{netloc}{path}"

    def _stream_url(self, netloc: str, path: str) -> str:
        if self._public is not None:
            public = urlsplit(self._public)
            netloc, path = public.netloc, public.path + path
        return f"wss://{netloc}{path}"

    # -- the stream -----------------------------------------------------------------------

    async def stream(self, websocket: WebSocket) -> None:
        url = self._stream_url(websocket.url.netloc, websocket.url.path)
        if websocket.url.query:
            url += "?" + websocket.url.query
        if not validate_signature(self._token, websocket.headers.get(SIGNATURE_HEADER), url):
            if self.count("forbidden"):
                log.warning("twilio: refused a stream with no valid signature (%s)", url)
            await websocket.close(code=_POLICY)
            return
        await websocket.accept()
        stream = MediaStream()
        start = await self._until_start(websocket, stream)
        if start is None:
            return
        if not start.mulaw_8k:
            self.count("unsupported_format")
            log.warning(
                "twilio: stream %s: unsupported audio %s/%d/%d",
                start.stream_sid,
                start.encoding,
                start.sample_rate,
                start.channels,
            )
            await websocket.close(code=_UNSUPPORTED)
            return
        try:
            port = await self.host.open(self.pipeline)
        except (RsppError, KeyError) as exc:  # not ready, full, no such pipeline
            self.count("session_refused")
            log.warning("twilio: stream %s: no session: %s", start.stream_sid, exc)
            await websocket.close(code=_TRY_LATER)
            return
        self.count("calls")
        log.info(
            "twilio: call %s (stream %s) -> session %s",
            start.call_sid,
            start.stream_sid,
            port.session_id,
        )
        reason = "disconnected"
        try:
            async with asyncio.TaskGroup() as tasks:
                speaking = tasks.create_task(self._speak(websocket, stream, port))
                reason = await self._listen(websocket, stream, port)
                speaking.cancel()
        finally:
            await port.close(reason)
            if self._drops is not None:
                self._drops().update(port.drops())
            await _close(websocket)

    async def _until_start(self, websocket: WebSocket, stream: MediaStream) -> Start | None:
        """Read frames until the stream's ``start`` (None if the socket closes first)."""
        while stream.state is not State.STARTED:
            data = await _receive(websocket)
            if data is None:
                return None
            try:
                stream.receive(data)
            except ProtocolError as exc:
                self._bad_frame(exc)
        return stream.start

    async def _listen(self, websocket: WebSocket, stream: MediaStream, port: SessionPort) -> str:
        """The caller's side, until ``stop``, a dropped socket or the session's end."""
        inbound = Inbound(port.sample_rate)
        while True:
            data = await _receive(websocket)
            if data is None:
                return "disconnected"
            try:
                event = stream.receive(data)
            except ProtocolError as exc:
                self._bad_frame(exc)
                continue
            if isinstance(event, Media):
                if event.track != "inbound":
                    continue  # a bidirectional stream carries the caller only; ignore others
                pcm = inbound.decode(event.payload)
                if pcm and not await self._push(
                    port, AudioIn(pcm=pcm, sample_rate=port.sample_rate)
                ):
                    return "session_ended"
            elif isinstance(event, Dtmf):
                if not await self._push(port, UserDtmf(digit=event.digit)):
                    return "session_ended"
            elif isinstance(event, Played):
                port.report_playback(event.turn, event.played_ms)
            elif isinstance(event, MarkCleared):
                self.count("marks_cleared")  # echoed by a clear: not evidence of playback
            elif isinstance(event, Stop):
                return "caller_hangup"

    async def _push(self, port: SessionPort, event: Event) -> bool:
        """Push one input; False once the session has ended. A refused input is counted."""
        try:
            await port.push(event)
        except InvalidInput as exc:
            reason = f"rejected.{event.kind}"
            if self.count(reason):
                log.warning("twilio: session %s refuses %s: %s", port.session_id, event.kind, exc)
        except SessionClosed:
            return False
        return True

    async def _speak(self, websocket: WebSocket, stream: MediaStream, port: SessionPort) -> None:
        """The bot's side, until the session ends (then the socket is closed) or the caller goes."""
        speaker = Speaker(stream, port.sample_rate)
        async for event in port.output():
            for frame in speaker(event):
                try:
                    await websocket.send_text(frame)
                except (WebSocketDisconnect, OSError, RuntimeError):
                    return  # the caller is gone: the listening side ends the call
        await _close(websocket)

    def _bad_frame(self, exc: ProtocolError) -> None:
        if self.count(f"protocol.{exc.reason}"):
            log.warning("twilio: bad frame (%s): %s", exc.reason, exc)


async def _receive(websocket: WebSocket) -> str | bytes | None:
    """The next text (or binary) frame; None once the socket is closed."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data: str | bytes | None = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is not None:
            return data


async def _close(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # closed, or gone
        await websocket.close()
