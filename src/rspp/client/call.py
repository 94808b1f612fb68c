"""A call to an RSPP server, over ``websockets``: a thin asyncio shell around :class:`CallClient`.

``async with Call.connect(url, token=...) as call:`` opens the WebSocket, says
hello and waits for ``call.ready``; inside, two tasks run under the call's
task group: a *reader* (frames -> the state machine -> happenings) and a
*clock* that advances the playout model at real time and sends the playback
reports it makes. Leaving the block says ``call.bye``, closes the socket and
cancels both; nothing outlives the call.

The connection can drop and the call go on: :meth:`Call.reconnect` opens a
new socket with the resume token and the last position received, and the
state machine drops whatever the server resends that we already had. With
``reconnect_attempts`` > 0 the call does that by itself when a connection is
lost (not when the server ended the call or refused it for good: the close
codes in :data:`FINAL_CODES`), backing off between attempts; the call ends
when they are used up. Audio sent while no connection is open is held (the
newest ``hold_audio_ms``, see :class:`~rspp.transports.call.client.CallClient`)
and sent first on the resumed connection; a call that cannot be resumed drops it.
``fallback_urls`` are other gateways of a cluster, tried in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict, Unpack
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from rspp.client.record import CallRecord
from rspp.transports.call.client import CallClient, Happening, State
from rspp.transports.call.wire import AudioFormat, WireError

__all__ = ["Call", "CallRefused", "Disconnected", "Notice", "call_url"]

log = logging.getLogger("rspp.client")

#: How often the playout clock ticks (reports go out at most this late).
TICK_S: Final = 0.01
_CALL_PATH: Final = "/v1/call"


class CallRefused(Exception):
    """The server refused the call or closed it in the handshake (``code``: the close code)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code}: {reason}" if code is not None else reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is gone (``code``: its close code; 1000: the call has ended)."""

    code: int | None
    reason: str

    @property
    def ended(self) -> bool:
        return self.code == 1000


Notice = Happening | Disconnected


class CallOptions(TypedDict, total=False):
    """The keywords of :class:`Call` (and of :meth:`Call.connect`)."""

    token: str
    input: AudioFormat | None
    output: AudioFormat | None
    pipeline: str
    report_every_ms: float
    open_timeout_s: float
    reconnect_attempts: int
    reconnect_backoff_s: float
    fallback_urls: Sequence[str]


def call_url(url: str, token: str = "") -> tuple[str, str]:
    """The WebSocket URL of a server's calls, and the token to use.

    Takes ``ws://host:port/v1/call``, ``http://host:port`` (what ``rspp serve``
    prints, ``?token=`` included) or ``host:port``. The token is ``token``, else
    the URL's ``?token=``, else ``RSPP_TOKEN``.
    """
    if "://" not in url:
        url = f"ws://{url}"
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    query = parse_qsl(parts.query)
    in_url = next((v for k, v in query if k == "token"), "")
    query = [(k, v) for k, v in query if k != "token"]
    path = parts.path.rstrip("/")
    if not path.endswith(_CALL_PATH):
        path += _CALL_PATH
    ws = urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))
    return ws, token or in_url or os.environ.get("RSPP_TOKEN", "")


class Call:
    """One call: send audio and text, get happenings, play the bot out at real time.

    Use :meth:`connect`. Happenings reach ``async for happening in call``
    (each iteration sees those after it began), the callbacks given to
    :meth:`on`, and :attr:`record` (turns, transcripts, the bot's played audio,
    latency at the client).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        input: AudioFormat | None = None,
        output: AudioFormat | None = None,
        pipeline: str = "",
        report_every_ms: float = 100.0,
        open_timeout_s: float = 10.0,
        reconnect_attempts: int = 0,
        reconnect_backoff_s: float = 0.25,
        fallback_urls: Sequence[str] = (),
    ) -> None:
        self.url, self.token = call_url(url, token)
        #: Where to reconnect, in turn, when the server is gone (a cluster's other gateways).
        self.urls = [self.url, *(call_url(u, self.token)[0] for u in fallback_urls)]
        #: Reconnect by itself this many times after a lost connection (0: never).
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff_s = reconnect_backoff_s
        #: Connections reopened by themselves so far.
        self.reconnects = 0
        self.protocol = CallClient(
            token=self.token,
            pipeline=pipeline,
            input=input,
            output=output,
            report_every_ms=report_every_ms,
        )
        self.open_timeout_s = open_timeout_s
        loop = asyncio.get_running_loop()
        self.record = CallRecord(self.protocol.output, started_at=loop.time())
        #: How the last connection closed (None while it is open).
        self.close_code: int | None = None
        self.close_reason = ""
        self._loop = loop
        self._ws: ClientConnection | None = None
        self._group: asyncio.TaskGroup | None = None
        self._reader: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._callbacks: list[Callable[[Notice], None]] = []
        self._queues: list[asyncio.Queue[Notice | None]] = []
        self._changed = asyncio.Event()
        self.ended = False

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, **options: Unpack[CallOptions]) -> AsyncIterator[Call]:
        """Open a call (raises :class:`CallRefused`); say ``call.bye`` when the block ends.

        ``options`` are the constructor's keywords.
        """
        call = cls(url, **options)
        mine: BaseException | None = None  # raised here or in the block, not by a task
        try:
            async with asyncio.TaskGroup() as group:
                call._group = group
                try:
                    await call._open()
                    clock = group.create_task(call._clock(), name="rspp-call-clock")
                    try:
                        yield call
                    finally:
                        clock.cancel()
                        await call._close()
                except BaseException as exc:
                    mine = exc
                    raise
        except BaseExceptionGroup as group_error:
            # The task group wraps what the block raised: hand it back as it was raised.
            if mine is not None and group_error.exceptions == (mine,):
                raise mine from None
            raise

    async def reconnect(self) -> None:
        """Continue this call on a new connection (resume token, last position received)."""
        if self.ended or not self.protocol.resumable:
            raise CallRefused(self.close_code, "the call has ended")
        await self._drop()
        await self._open()

    async def bye(self) -> None:
        """End the call (the server closes the socket; the ``async with`` can end)."""
        if self.protocol.state is State.OPEN:
            self.protocol.bye()
            await self._flush()

    @property
    def connected(self) -> bool:
        return self.protocol.state is State.OPEN

    @property
    def websocket(self) -> ClientConnection | None:
        """The live connection (tests drop it to see a reconnect through)."""
        return self._ws

    @property
    def session(self) -> str:
        ready = self.protocol.ready
        return ready.session if ready is not None else ""

    # -- sending -------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        """User audio in the ``input`` format (dropped while the connection is down)."""
        self.protocol.send_audio(pcm)
        await self._flush()

    async def send_text(self, text: str) -> None:
        """A typed user turn; its reply is timed from now."""
        self.protocol.send_text(text)
        self.record.typed(text, self._loop.time())
        await self._flush()

    async def interrupt(self) -> None:
        """Ask the kernel to stop the bot (it decides, as for a barge-in)."""
        self.protocol.interrupt()
        await self._flush()

    async def cancel(self, turn: int = 0) -> None:
        """Cancel the reply of ``turn`` (0: the one in progress), unconditionally."""
        self.protocol.cancel(turn)
        await self._flush()

    def mark_speech_end(self, at: float | None = None) -> None:
        """The user stopped speaking (at ``at``, the loop's clock; default now)."""
        self.record.speech_ended(self._loop.time() if at is None else at)

    # -- receiving -----------------------------------------------------------------------

    def on(self, callback: Callable[[Notice], None]) -> None:
        """Call ``callback`` with every happening (and :class:`Disconnected`) from now on."""
        self._callbacks.append(callback)

    def __aiter__(self) -> AsyncIterator[Notice]:
        queue: asyncio.Queue[Notice | None] = asyncio.Queue()
        self._queues.append(queue)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Notice | None]) -> AsyncIterator[Notice]:
        try:
            while (notice := await queue.get()) is not None:
                yield notice
        finally:
            self._queues.remove(queue)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float | None = None) -> None:
        """Wait until ``predicate()`` holds (checked after every happening)."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- the shell -----------------------------------------------------------------------

    async def _open(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.open_timeout_s,
                compression=None,
                proxy=None,
                max_size=2**20,
            )
        except InvalidStatus as exc:
            raise CallRefused(exc.response.status_code, f"HTTP {exc.response.status_code}") from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise CallRefused(None, f"cannot connect to {self.url}: {exc}") from exc
        self._ws = ws
        self.close_code, self.close_reason = None, ""
        protocol = self.protocol
        protocol.hello()
        try:
            await self._flush()
            async with asyncio.timeout(self.open_timeout_s):
                first = await ws.recv()
            if isinstance(first, bytes):
                raise WireError("bot audio before call.ready")
            self._dispatch(protocol.receive_text(first, self._loop.time()))
        except ConnectionClosed as exc:
            protocol.connection_lost()
            raise CallRefused(_code(exc), _reason(exc)) from None
        except (WireError, TimeoutError) as exc:
            protocol.connection_lost()
            await ws.close(4400 if isinstance(exc, WireError) else 1000)
            raise CallRefused(None, f"no call.ready: {exc!r}") from exc
        assert self._group is not None
        self._reader = self._group.create_task(self._read(ws), name="rspp-call-reader")

    async def _read(self, ws: ClientConnection) -> None:
        protocol = self.protocol
        code: int | None = None
        reason = ""
        try:
            async for message in ws:
                now = self._loop.time()
                if isinstance(message, bytes):
                    happenings = protocol.receive_bytes(message, now)
                else:
                    happenings = protocol.receive_text(message, now)
                self._dispatch(happenings)
                await self._flush()
            code, reason = ws.close_code, ws.close_reason or ""
        except ConnectionClosed as exc:
            code, reason = _code(exc), _reason(exc)
        except WireError as exc:
            log.warning("the server broke the protocol: %s", exc)
            code, reason = 4400, str(exc)
            await ws.close(4400, str(exc)[:120])
        finally:
            if self._ws is ws:
                self._ws = None
                self.close_code, self.close_reason = code, reason
                protocol.connection_lost()
                if code == 1000 or protocol.state is State.CLOSED:
                    self.ended = True
                self._dispatch([Disconnected(code, reason)])
                if self.ended:
                    self._finish()
                elif self.reconnect_attempts and code not in FINAL_CODES:
                    self._start_reconnecting()
                elif self.reconnect_attempts:
                    self._finish()  # refused for good: nothing to reconnect to

    def _start_reconnecting(self) -> None:
        group = self._group
        if group is None:
            return
        try:
            group.create_task(self._reconnect_by_itself(), name="rspp-call-reconnect")
        except RuntimeError:  # the call's block is over: nothing to go on with
            self._finish()

    async def _reconnect_by_itself(self) -> None:
        delay = self.reconnect_backoff_s
        for attempt in range(1, self.reconnect_attempts + 1):
            if attempt > 1:  # the first at once: a lost connection is not a loaded server
                await asyncio.sleep(delay)
            if self.ended or self._ws is not None:
                return  # ended meanwhile, or reconnected by hand
            try:
                await self._open()
            except CallRefused as exc:
                log.info("reconnect %d of %d failed: %s", attempt, self.reconnect_attempts, exc)
                if exc.code in FINAL_CODES:
                    break
                if exc.code is None and len(self.urls) > 1:
                    # Nobody there: the next gateway, at once the first time round.
                    self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
                    if attempt < len(self.urls):
                        delay = 0.0
                        continue
                delay = min(max(delay * 2, self.reconnect_backoff_s), 5.0)
                continue
            self.reconnects += 1
            log.info("call %s: reconnected (attempt %d)", self.session, attempt)
            return
        self._finish()

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._dispatch(self.protocol.advance(self._loop.time()))
            await self._flush()

    async def _flush(self) -> None:
        async with self._send_lock:
            frames = self.protocol.data_to_send()
            ws = self._ws
            if ws is None:
                return
            try:
                for frame in frames:
                    await ws.send(frame)
            except ConnectionClosed:
                pass  # the reader sees it and says so

    def _dispatch(self, happenings: list[Happening] | list[Disconnected]) -> None:
        if not happenings:
            return
        now = self._loop.time()
        record = self.record
        for happening in happenings:
            if not isinstance(happening, Disconnected):
                record.on(happening, now)
            for callback in self._callbacks:
                callback(happening)
            for queue in self._queues:
                queue.put_nowait(happening)
        self._changed.set()

    def _finish(self) -> None:
        self.ended = True
        for queue in self._queues:
            queue.put_nowait(None)
        self._changed.set()

    async def _drop(self) -> None:
        """Close the connection we have, if any, and wait for its reader."""
        ws, reader = self._ws, self._reader
        if ws is not None:
            self._ws = None  # ours to close: the reader does not take it for the call's end
            self.protocol.connection_lost()
            await ws.close()
            self._dispatch([Disconnected(ws.close_code, "closed by the client")])
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._reader = None

    async def _close(self) -> None:
        ws = self._ws
        if ws is not None and self.protocol.state is State.OPEN:
            self.protocol.bye()
            await self._flush()
            reader = self._reader
            if reader is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):  # the server's bye and close
                        await asyncio.shield(reader)
        await self._drop()
        self._finish()


#: Close codes after which reconnecting cannot help (docs/protocol.md): the call ended
#: (1000), was refused for good (4400 protocol, 4401 auth, 4404 no such call, 4413
#: oversized, 4429 flood) or another connection took it over (4409).
FINAL_CODES: Final = frozenset({1000, 4400, 4401, 4404, 4409, 4413, 4429})


def _code(exc: ConnectionClosed) -> int | None:
    frame = exc.rcvd or exc.sent
    return frame.code if frame is not None else None


def _reason(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return frame.reason if frame is not None else "connection lost"
