"""What every client of an OpenAI-compatible HTTP API shares.

The chat, transcription and speech clients differ in what they send and how
they read the answer; they share how they connect (:class:`ApiClient`: base
URL, API key, connection pool, redaction), when a failed request is worth
another try (:class:`RetryPolicy`, :func:`retrying`), how long a stream may
pause (:func:`timed`), how a streamed answer is closed (:class:`ResponseStream`),
and how an error answer is turned into a message a person can act on
(:func:`error_message`).

The API key comes from the environment variable named by ``api_key_env`` and
is sent as ``Authorization: Bearer``. It never appears in a ``repr``, a log
line or an error message: messages that may echo the request (OpenAI's own
401 quotes the key) go through :meth:`ApiClient.redact`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
import msgspec

from rspp.providers.errors import (
    ProviderConfigError,
    ProviderConnectError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeout,
)

__all__ = [
    "ERROR_BODY_MAX",
    "RETRY_STATUS",
    "ApiClient",
    "Closing",
    "ResponseStream",
    "RetryPolicy",
    "api_key",
    "describe_error",
    "describe_exc",
    "error_message",
    "keep_open",
    "read_capped",
    "retry_after",
    "retry_delay",
    "retrying",
    "timed",
]

log = logging.getLogger("rspp.providers.openai")

T = TypeVar("T")
P = TypeVar("P")

#: Statuses worth another try before any output (plus every 5xx).
RETRY_STATUS = frozenset({408, 409, 429})
#: How much of an error body is read to find the server's message.
ERROR_BODY_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries before any output: how many, and how long to wait between them."""

    #: Retries after the first attempt (0: never retry).
    max_retries: int = 2
    #: The first backoff; it doubles per retry up to ``backoff_max_s``, with jitter.
    backoff_s: float = 0.25
    backoff_max_s: float = 2.0
    #: A ``Retry-After`` longer than this is not waited for: the error is raised at once.
    retry_after_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("RetryPolicy values must be >= 0")

    @classmethod
    def from_ms(cls, max_retries: int, backoff_ms: float, retry_after_max_ms: float) -> Self:
        """The policy of a node's config (milliseconds); backoff is capped at 2 s, or the
        first backoff if that is longer."""
        backoff_s = backoff_ms / 1000
        return cls(
            max_retries=max_retries,
            backoff_s=backoff_s,
            backoff_max_s=max(2.0, backoff_s),
            retry_after_max_s=retry_after_max_ms / 1000,
        )

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based): exponential, half of it jittered."""
        full = min(self.backoff_max_s, self.backoff_s * 2.0 ** (retry - 1))
        return full / 2 + random.uniform(0, full / 2)


def retry_delay(policy: RetryPolicy, attempts: int, exc: ProviderError) -> float | None:
    """How long to wait before another try after ``exc`` (``attempts`` sent); None: give up.

    Only for failures before any output: a connection that failed or broke,
    HTTP 5xx, 408, 409 and 429 (waiting what ``Retry-After`` asks, unless it is
    more than ``policy.retry_after_max_s``).
    """
    if attempts > policy.max_retries:
        return None
    if isinstance(exc, ProviderConnectError):
        return policy.backoff(attempts)
    if isinstance(exc, ProviderStatusError) and (exc.status in RETRY_STATUS or exc.status >= 500):
        if exc.retry_after_s is None:
            return policy.backoff(attempts)
        if exc.retry_after_s <= policy.retry_after_max_s:
            return exc.retry_after_s
    return None


async def retrying(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    limit_s: float,
    where: str,
    what: str,
    phase: str,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``await attempt(n)`` for n = 1, 2, ... until it succeeds, all within ``limit_s``.

    The retry loop of the phase before any output: a :class:`ProviderError`
    that :func:`retry_delay` deems transient is tried again after the delay it
    says (``cleanup`` runs first, to release the failed attempt); any other is
    raised with its ``attempts`` set. Missing the deadline is a
    :class:`ProviderTimeout` (``phase``), never retried: a server that slow is
    not made faster by asking twice.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    attempts = 0
    scope = asyncio.timeout(limit_s)
    try:
        async with scope:
            while True:
                attempts += 1
                try:
                    return await attempt(attempts)
                except ProviderError as exc:
                    exc.attempts = attempts
                    delay = retry_delay(policy, attempts, exc)
                    if delay is None or loop.time() + delay >= deadline:
                        raise
                    if cleanup is not None:
                        await cleanup()
                    log.warning(
                        "%s: %s; retry %d of %d in %.2f s",
                        where,
                        exc,
                        attempts,
                        policy.max_retries,
                        delay,
                    )
                    await asyncio.sleep(delay)
    except TimeoutError:
        if not scope.expired():
            raise
        raise ProviderTimeout(
            f"no {what} from {where} within {limit_s:g} s",
            phase=phase,
            timeout_s=limit_s,
            attempts=attempts,
        ) from None


async def timed(
    step: Awaitable[T],
    limit_s: float,
    *,
    where: str,
    what: str,
    during: str,
    phase: str,
    attempts: int,
) -> T:
    """``await step`` within ``limit_s``, else a :class:`ProviderTimeout` (``phase``).

    For the phase after the first output, which is never retried: a stream
    that pauses that long in the middle of ``during`` is given up.
    """
    scope = asyncio.timeout(limit_s)
    try:
        async with scope:
            return await step
    except TimeoutError:
        if not scope.expired():
            raise
        raise ProviderTimeout(
            f"no {what} from {where} for {limit_s:g} s in the middle of {during}",
            phase=phase,
            timeout_s=limit_s,
            attempts=attempts,
        ) from None


def api_key(api_key_env: str | None) -> str | None:
    """The API key in the environment variable ``api_key_env`` (None: no key wanted)."""
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise ProviderConfigError(
            f"the API key variable {api_key_env} is not set in the environment"
        )
    return key


class Closing:
    """Closed by :meth:`aclose` when its ``async with`` ends, however it ends."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def keep_open(client: Closing) -> None:
    """Wait until cancelled, then close ``client``: the ``run()`` of a node that owns a
    connection pool for the session's life."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await client.aclose()


class ApiClient(Closing):
    """A connection pool to one OpenAI-compatible server, with its key kept secret.

    ``connect_s`` bounds each step of a request but reads (connect, write,
    pool): subclasses time what they read themselves. ``retry`` is their
    policy before any output. ``headers`` are sent with every request; send
    per-request ``content-type`` headers (a default one would override the
    multipart boundary of an upload).
    Use it as ``async with`` (or call :meth:`aclose`) so that its connections close.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "",
        api_key_env: str | None = None,
        connect_s: float,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.retry = retry or RetryPolicy()
        timeout = httpx.Timeout(connect=connect_s, read=None, write=connect_s, pool=connect_s)
        self._key = api_key(api_key_env)
        all_headers = {"user-agent": "rspp", **(headers or {})}
        if self._key:
            all_headers["authorization"] = f"Bearer {self._key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", headers=all_headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        key = "'***'" if self._key else "None"
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, api_key={key})"
        )

    def redact(self, text: str) -> str:
        """``text`` with the API key masked (for messages that echo what was sent)."""
        return text.replace(self._key, "***") if self._key else text

    async def post(self, path: str, **request: Any) -> httpx.Response:
        """POST to ``path`` (``request``: :meth:`httpx.AsyncClient.build_request`'s arguments);
        the open, streamed response if it is a 200, else the error in the server's words."""
        http = self._http
        try:
            response = await http.send(http.build_request("POST", path, **request), stream=True)
        except httpx.TransportError as exc:
            raise ProviderConnectError(
                f"cannot reach {self.base_url}: {describe_exc(exc)}"
            ) from exc
        if response.status_code != 200:
            raise await self.status_error(response)
        return response

    async def status_error(self, response: httpx.Response) -> ProviderStatusError:
        """The error for a non-2xx ``response`` (which this closes), in the server's words."""
        try:
            body = await read_capped(response)
        except httpx.TransportError:
            body = b""
        finally:
            await response.aclose()
        return ProviderStatusError(
            response.status_code,
            self.redact(error_message(body) or response.reason_phrase),
            retry_after_s=retry_after(response.headers),
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._http.aclose()


class ResponseStream(Closing, Generic[P]):
    """The open response of a streamed answer, read as parts (SSE lines, audio bytes).

    Closing it -- ``aclose()``, its ``async with``, or a ``CancelledError`` that
    the subclass turns into ``aclose()`` -- closes the response at once; one
    closed before its end cannot go back to the pool, so its connection closes
    and the server learns to stop. ``attempts`` counts the requests sent.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self._closed = False
        self._response: httpx.Response | None = None
        self._parts: AsyncGenerator[P, None] | None = None

    def _open(self, response: httpx.Response, parts: AsyncGenerator[P, None]) -> None:
        """Read ``parts`` of ``response`` from now on."""
        self._response = response
        self._parts = parts

    async def _release(self) -> None:
        """Close the response of the attempt in progress (a failed one, or the last)."""
        parts, response = self._parts, self._response
        self._parts = self._response = None
        try:
            if parts is not None:
                await parts.aclose()
        finally:
            if response is not None:
                await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP response (and so the connection, if the answer was not finished)."""
        if self._closed:
            return
        self._closed = True
        await self._release()


async def read_capped(response: httpx.Response, limit: int = ERROR_BODY_MAX) -> bytes:
    """At most ``limit`` bytes of a (streamed) response body."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        parts.append(part)
        size += len(part)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def error_message(body: bytes) -> str:
    """The server's explanation in an error body, whatever the server's dialect."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return " ".join(body.decode("utf-8", "replace").split())[:500]
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            if key in data:
                return describe_error(data[key]) or str(data)[:500]
    return str(data)[:500]


def describe_error(error: Any) -> str:
    """An error object as OpenAI (``{"message", "type", "code"}``), Ollama (a string) or
    FastAPI (``detail``) write it."""
    if error is None:
        return ""
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("msg")
        kind = error.get("type") or error.get("code")
        if message:
            return f"{message} ({kind})" if kind else str(message)
    return str(error)[:500]


def describe_exc(exc: Exception) -> str:
    """An exception as ``Type: message`` (httpx's messages are often empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def retry_after(headers: httpx.Headers) -> float | None:
    """The wait a 429/503 asks for: ``retry-after-ms`` (OpenAI), else ``Retry-After``
    (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
