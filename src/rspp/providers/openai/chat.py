"""Streaming chat completions over the OpenAI-compatible HTTP API.

``POST {base_url}/chat/completions`` with ``"stream": true`` answers with
Server-Sent Events, one JSON chunk per event (``choices[0].delta.content``),
ending with ``data: [DONE]``. OpenAI, vLLM, Ollama (``/v1``), llama.cpp
servers and Groq all speak it.

Theory of operation. A :class:`ChatStream` is one reply. Iterating it sends
the request and yields text deltas as they arrive. Its life has two phases
with different rules, because a voice pipeline may already have spoken the
first words of a reply:

* **Before the first token** nothing has reached anyone, so a failure is
  retried with backoff: a connection refused, reset or dropped, HTTP 5xx, 408,
  409 and 429 (waiting what ``Retry-After`` asks, unless it asks for more than
  ``RetryPolicy.retry_after_max_s``: a voice reply that late is useless). The
  whole phase, retries and backoff included, has one deadline,
  ``Timeouts.first_token_s``; missing it is a :class:`ProviderTimeout`, not
  retried (a server that slow is not made faster by asking twice). Other 4xx
  are raised at once with the server's own message.
* **After the first token** nothing is retried -- restarting would speak the
  reply twice. A broken stream or a server-reported error is a
  :class:`ProviderStreamError`; a gap longer than ``Timeouts.token_s``
  between two tokens is a :class:`ProviderTimeout`. Keep-alive comments do not
  count as tokens.

Closing the stream -- leaving its ``async with``, ``aclose()``, or a
``CancelledError`` at any await inside it -- closes the HTTP response at once.
A response closed before its end cannot go back to the connection pool, so
the connection itself is closed, which is how the server learns to stop
generating. Malformed SSE lines and chunks are skipped and counted
(``ChatStream.malformed``), never fatal.

The API key comes from the environment variable named by ``api_key_env``
(never from a pipeline spec); it is sent as ``Authorization: Bearer`` and kept
out of every ``repr``, log line and error message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from rspp.providers.errors import ProviderConnectError, ProviderError, ProviderStreamError
from rspp.providers.openai.http import (
    ApiClient,
    ResponseStream,
    RetryPolicy,
    describe_error,
    describe_exc,
    retrying,
    timed,
)
from rspp.providers.openai.sse import LineSplitter, SseDecoder, SseEvent

__all__ = ["ChatClient", "ChatStream", "Message", "RetryPolicy", "Timeouts"]

log = logging.getLogger("rspp.providers.openai")

#: A chat message as the API takes it: ``{"role": "user", "content": "..."}``.
Message = Mapping[str, Any]

#: How long to wait for the end of the HTTP body after ``[DONE]`` (so the connection is reused).
_DRAIN_S = 0.5


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait, in seconds, for each step of a reply."""

    #: Establishing a connection (TCP and TLS), per attempt; also sending the request.
    connect_s: float = 5.0
    #: From the request to the first token of the reply, every retry included.
    first_token_s: float = 15.0
    #: Between two tokens once the reply has started.
    token_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "first_token_s", "token_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Timeouts.{name} must be > 0")


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """The part of a ``chat.completion.chunk`` we read; everything else is ignored."""

    choices: list[_Choice] = []
    usage: dict[str, Any] | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


class ChatClient(ApiClient):
    """A connection pool to one OpenAI-compatible server; :meth:`stream` starts a reply.

    Use it as ``async with`` (or call :meth:`aclose`) so that its connections close.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "",
        api_key_env: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        super().__init__(
            base_url,
            model=model,
            api_key_env=api_key_env,
            # Reads are timed per token by ChatStream (keep-alive pings must not count).
            connect_s=self.timeouts.connect_s,
            retry=retry,
            headers={
                "accept": "text/event-stream",
                "content-type": "application/json",
                **(headers or {}),
            },
            transport=transport,
        )

    def stream(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatStream:
        """A streamed reply to ``messages`` (sent when first iterated).

        ``extra`` adds request fields as they are (``top_p``, ``seed``,
        ``max_completion_tokens``, ...); ``stream`` is always true.
        """
        body: dict[str, Any] = dict(extra or {})
        model = model if model is not None else self.model
        if model:
            body["model"] = model
        body["messages"] = [dict(m) for m in messages]
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if stop:
            body["stop"] = list(stop)
        body["stream"] = True
        return ChatStream(self, msgspec.json.encode(body))


class ChatStream(ResponseStream[str]):
    """One streamed reply: iterate it for text deltas; close it to stop the server generating.

    After the iteration: ``finish_reason`` (``"stop"``, ``"length"``, ... or None
    if the server sent none), ``usage`` (if the server sent it), ``attempts``
    (requests sent) and ``malformed`` (SSE lines or chunks skipped).
    """

    def __init__(self, client: ChatClient, body: bytes) -> None:
        super().__init__()
        self._client = client
        self._body = body
        self.malformed = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        #: Whether a token has been returned (from then on nothing is retried).
        self.started = False
        self._sent = False
        self._done = False  # [DONE] seen
        self._decoder = SseDecoder()

    # -- the iterator ---------------------------------------------------------------------

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        try:
            if not self._sent:
                self._sent = True
                text = await self._first_text()
            else:
                text = await self._next_text()
            if text is None and self._done:
                await self._drain()
        except BaseException:
            await self.aclose()  # a cancellation, a timeout, an error: the server must stop
            raise
        if text is None:
            await self.aclose()
            raise StopAsyncIteration
        self.started = True
        return text

    async def aclose(self) -> None:
        """Close the HTTP response (and so the connection, if the reply was not finished)."""
        if self._closed:
            return
        await super().aclose()
        if self.malformed:
            log.warning("%s: skipped %d malformed SSE lines", self._client.base_url, self.malformed)

    # -- phase 1: up to the first token, with retries ----------------------------------------

    async def _first_text(self) -> str | None:
        client = self._client
        return await retrying(
            self._attempt,
            client.retry,
            limit_s=client.timeouts.first_token_s,
            where=client.base_url,
            what="first token",
            phase="first_token",
            cleanup=self._release,
        )

    async def _attempt(self, attempt: int) -> str | None:
        """Send the request and read up to the first text (None: an empty reply)."""
        self.attempts = attempt
        response = await self._client.post("chat/completions", content=self._body)
        self._open(response, _sse_lines(response))
        self._decoder = SseDecoder()
        return await self._read_text()

    # -- phase 2: the rest of the reply, never retried ---------------------------------------

    async def _next_text(self) -> str | None:
        return await timed(
            self._read_text(),
            self._client.timeouts.token_s,
            where=self._client.base_url,
            what="token",
            during="a reply",
            phase="next_token",
            attempts=self.attempts,
        )

    async def _read_text(self) -> str | None:
        """Read events up to the next piece of text; None at the end of the reply."""
        lines = self._parts
        if lines is None:
            return None
        decoder = self._decoder
        while True:
            event: SseEvent | None
            try:
                line = await anext(lines)
            except StopAsyncIteration:
                event = decoder.end()
                text = self._interpret(event) if event is not None else None
                if text:
                    return text
                if self._done or self.finish_reason is not None:
                    return None  # a server that ends without [DONE] after a finish reason
                raise self._broken("the stream ended before the reply was complete") from None
            except httpx.TransportError as exc:
                raise self._broken(f"the stream broke: {describe_exc(exc)}") from exc
            skipped = decoder.skipped
            event = decoder.feed(line)
            self.malformed += decoder.skipped - skipped  # a garbled line: counted, not fatal
            if event is None:
                continue
            text = self._interpret(event)
            if self._done:
                return None
            if text:
                return text

    def _broken(self, what: str) -> ProviderError:
        """A broken stream: retryable before the first token (nothing was said), fatal after."""
        where = self._client.base_url
        if self.started:
            return ProviderStreamError(f"{where}: {what}", attempts=self.attempts)
        return ProviderConnectError(f"{where}: {what} (before the first token)")

    def _interpret(self, event: SseEvent) -> str | None:
        """The text of one SSE event; sets ``_done`` on ``[DONE]``; raises on a reported error."""
        data = event.data.strip()
        if data == "[DONE]":
            self._done = True
            return None
        try:
            chunk = _decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            if event.event == "error":
                raise ProviderStreamError(
                    f"{self._client.base_url} reported an error: {self._client.redact(data[:500])}",
                    attempts=self.attempts,
                ) from None
            self.malformed += 1
            log.debug(
                "%s: skipped a malformed SSE event: %.200r",
                self._client.base_url,
                self._client.redact(data),
            )
            return None
        if chunk.error is not None or event.event == "error":
            message = describe_error(chunk.error) or data[:500]
            raise ProviderStreamError(
                f"{self._client.base_url} reported an error: {self._client.redact(message)}",
                attempts=self.attempts,
            )
        if chunk.usage is not None:
            self.usage = chunk.usage
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        return choice.delta.content if choice.delta is not None else None

    async def _drain(self) -> None:
        """Read the end of the body after ``[DONE]`` so the connection can be reused."""
        lines = self._parts
        if lines is None:
            return
        try:
            async with asyncio.timeout(_DRAIN_S):
                async for _ in lines:
                    pass
        except (TimeoutError, httpx.TransportError):
            pass  # aclose() closes the connection instead


async def _sse_lines(response: httpx.Response) -> AsyncGenerator[str, None]:
    """The lines of an event stream, split as SSE splits them (see :class:`LineSplitter`)."""
    splitter = LineSplitter()
    async for data in response.aiter_bytes():
        for line in splitter.feed(data):
            yield line
    for line in splitter.end():
        yield line
