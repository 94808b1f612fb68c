"""Speech to text and text to speech over the OpenAI-compatible audio API.

``POST {base_url}/audio/transcriptions`` takes a multipart upload (``file``,
``model``, ``language``, ``prompt``, ``response_format``) and answers
``{"text": ...}``. ``POST {base_url}/audio/speech`` takes JSON (``model``,
``input``, ``voice``, ``response_format``, ``speed``) and answers the audio;
with ``"response_format": "pcm"`` it is raw 16-bit little-endian mono at
24 kHz, streamed as it is synthesized. OpenAI, ``rspp serve-audio``
(:mod:`rspp.serve.openai_audio`), speaches and most local TTS servers speak it.

Theory of operation. The rules are those of :mod:`rspp.providers.openai.chat`,
because the hazard is the same: once audio has been played, asking again
would say it twice.

* :meth:`TranscriptionClient.transcribe` outputs nothing until it has the
  whole transcript, so every transient failure (a connection that failed or
  broke, HTTP 5xx, 408, 409, 429) is retried with backoff, all within one
  deadline, ``TranscriptionTimeouts.response_s``. Other 4xx are raised at once
  as :class:`ProviderStatusError` with the server's own message.
* A :class:`SpeechStream` is retried the same way up to the first audio byte,
  within ``SpeechTimeouts.first_byte_s``; after it, nothing is retried: a
  broken stream is a :class:`ProviderStreamError` and a gap longer than
  ``SpeechTimeouts.chunk_s`` a :class:`ProviderTimeout`. Audio is yielded as
  it arrives, resampled to the caller's rate by a streaming resampler
  (:class:`Pcm16Resampler`), so chunk boundaries do not click and an odd byte
  at the end of a network chunk waits for the next one.

Closing a stream -- leaving its ``async with``, ``aclose()``, or a
``CancelledError`` at any await inside it -- closes the HTTP response, and so
the connection: the server learns to stop synthesizing. The API key comes
from the environment variable named by ``api_key_env`` and never appears in a
``repr``, log line or error message.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import numpy as np

from rspp.providers.errors import ProviderConnectError, ProviderStreamError
from rspp.providers.openai.http import (
    ApiClient,
    ResponseStream,
    RetryPolicy,
    describe_exc,
    error_message,
    read_capped,
    retrying,
    timed,
)

__all__ = [
    "Pcm16Resampler",
    "SpeechClient",
    "SpeechStream",
    "SpeechTimeouts",
    "TranscriptionClient",
    "TranscriptionTimeouts",
    "pcm16_to_wav",
]

#: The most of a transcription answer that is read (a transcript is a few KB).
_ANSWER_MAX = 1 << 20


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0")


@dataclass(frozen=True, slots=True)
class TranscriptionTimeouts:
    """How long to wait, in seconds, for a transcript."""

    #: Establishing a connection (TCP and TLS), per attempt; also each write of the upload.
    connect_s: float = 5.0
    #: From the request to the transcript, every retry included.
    response_s: float = 30.0

    def __post_init__(self) -> None:
        _check_positive(self, "connect_s", "response_s")


@dataclass(frozen=True, slots=True)
class SpeechTimeouts:
    """How long to wait, in seconds, for each step of a synthesis."""

    #: Establishing a connection (TCP and TLS), per attempt; also sending the request.
    connect_s: float = 5.0
    #: From the request to the first audio byte, every retry included.
    first_byte_s: float = 10.0
    #: Between two chunks of audio once it has started.
    chunk_s: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self, "connect_s", "first_byte_s", "chunk_s")


def pcm16_to_wav(pcm16: bytes, sample_rate: int) -> bytes:
    """PCM16 mono as a WAV file (the upload format every transcription server takes)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16[: len(pcm16) // 2 * 2])
    return out.getvalue()


class Pcm16Resampler:
    """Streaming soxr resampling of PCM16 mono that arrives in arbitrary byte chunks.

    Sans I/O: :meth:`feed` takes bytes as the network delivers them (an odd
    byte is kept for the next chunk) and returns what can be output now;
    :meth:`flush` returns the rest at the end. One filter state spans all the
    chunks, so their boundaries are inaudible.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._odd = b""
        self._stream: Any = None
        if rate_in != rate_out:
            import soxr

            self._stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality="HQ")

    def feed(self, data: bytes) -> bytes:
        """Resample the next bytes of the stream; may return less (or nothing) for now."""
        if self._odd:
            data = self._odd + data
        cut = len(data) // 2 * 2
        self._odd = data[cut:]
        if self._stream is None or not cut:
            return data[:cut]
        samples = np.frombuffer(data, dtype="<i2", count=cut // 2)
        return bytes(self._stream.resample_chunk(samples).astype("<i2").tobytes())

    def flush(self) -> bytes:
        """The end of the stream: what the filter still holds (a dangling odd byte is dropped)."""
        self._odd = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        return bytes(tail.astype("<i2").tobytes())


class _Transcript(msgspec.Struct):
    text: str


_decode_transcript = msgspec.json.Decoder(_Transcript).decode


class TranscriptionClient(ApiClient):
    """Transcribes utterances with ``POST /audio/transcriptions``.

    Use it as ``async with`` (or call :meth:`aclose`) so that its connections close.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "whisper-1",
        api_key_env: str | None = None,
        language: str | None = None,
        prompt: str | None = None,
        timeouts: TranscriptionTimeouts | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.language = language
        self.prompt = prompt
        self.timeouts = timeouts or TranscriptionTimeouts()
        super().__init__(
            base_url,
            model=model,
            api_key_env=api_key_env,
            # The answer is bounded by the whole call's deadline (``response_s``).
            connect_s=self.timeouts.connect_s,
            retry=retry,
            headers={"accept": "application/json", **(headers or {})},
            transport=transport,
        )

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int = 16000,
        *,
        language: str | None = None,
        prompt: str | None = None,
    ) -> str:
        """The transcript of PCM16 mono audio (sent as a WAV file)."""
        fields = {"model": self.model, "response_format": "json"}
        language = language if language is not None else self.language
        prompt = prompt if prompt is not None else self.prompt
        if language:
            fields["language"] = language
        if prompt:
            fields["prompt"] = prompt
        wav = pcm16_to_wav(pcm16, sample_rate)

        async def attempt(_: int) -> str:
            return await self._post(wav, fields)

        return await retrying(
            attempt,
            self.retry,
            limit_s=self.timeouts.response_s,
            where=self.base_url,
            what="transcript",
            phase="response",
        )

    async def _post(self, wav: bytes, fields: dict[str, str]) -> str:
        response = await self.post(
            "audio/transcriptions", data=fields, files={"file": ("audio.wav", wav, "audio/wav")}
        )
        try:
            body = await read_capped(response, _ANSWER_MAX)
        except httpx.TransportError as exc:
            raise ProviderConnectError(
                f"{self.base_url}: the answer broke: {describe_exc(exc)}"
            ) from exc
        finally:
            await response.aclose()
        kind = response.headers.get("content-type", "")
        if kind.startswith("text/plain"):  # a server that ignores response_format=json
            return body.decode("utf-8", "replace").strip()
        try:
            return _decode_transcript(body).text.strip()
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProviderStreamError(
                f"{self.base_url} answered without a transcript: "
                f"{self.redact(error_message(body)[:200])}"
            ) from None


class SpeechClient(ApiClient):
    """Synthesizes speech with ``POST /audio/speech``; :meth:`speak` starts one stream.

    ``source_rate`` is the rate of the server's raw PCM (24 kHz for OpenAI).
    Use it as ``async with`` (or call :meth:`aclose`) so that its connections close.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "tts-1",
        voice: str = "alloy",
        api_key_env: str | None = None,
        speed: float | None = None,
        source_rate: int = 24000,
        timeouts: SpeechTimeouts | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if source_rate <= 0:
            raise ValueError("source_rate must be > 0")
        self.voice = voice
        self.speed = speed
        self.source_rate = source_rate
        self.timeouts = timeouts or SpeechTimeouts()
        super().__init__(
            base_url,
            model=model,
            api_key_env=api_key_env,
            # Reads are timed per chunk by SpeechStream.
            connect_s=self.timeouts.connect_s,
            retry=retry,
            headers={"accept": "audio/pcm, application/octet-stream, */*", **(headers or {})},
            transport=transport,
        )

    def speak(
        self,
        text: str,
        *,
        sample_rate: int | None = None,
        voice: str | None = None,
        model: str | None = None,
        speed: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SpeechStream:
        """A stream of the speech of ``text`` as PCM16 mono at ``sample_rate`` (sent when
        first iterated; None: the server's own rate). ``extra`` adds request fields as they
        are (``instructions``, ...)."""
        body: dict[str, Any] = dict(extra or {})
        body["model"] = model if model is not None else self.model
        body["input"] = text
        body["voice"] = voice if voice is not None else self.voice
        body["response_format"] = "pcm"
        speed = speed if speed is not None else self.speed
        if speed is not None:
            body["speed"] = speed
        rate = sample_rate or self.source_rate
        return SpeechStream(self, msgspec.json.encode(body), Pcm16Resampler(self.source_rate, rate))


class SpeechStream(ResponseStream[bytes]):
    """One synthesis: iterate it for PCM16 chunks; close it to stop the server.

    After the iteration: ``attempts`` (requests sent) and ``received`` (bytes
    of audio that came from the server, before resampling).
    """

    def __init__(self, client: SpeechClient, body: bytes, resampler: Pcm16Resampler) -> None:
        super().__init__()
        self._client = client
        self._body = body
        self._resampler = resampler
        self.sample_rate = resampler.rate_out
        self.received = 0
        self._sent = False
        self._ended = False

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            while not self._closed and not self._ended:
                if not self._sent:
                    self._sent = True
                    raw = await self._first_bytes()
                else:
                    raw = await self._next_bytes()
                if raw is None:
                    self._ended = True
                    out = self._resampler.flush()
                else:
                    out = self._resampler.feed(raw)
                if out:
                    return out
        except BaseException:
            await self.aclose()  # a cancellation, a timeout, an error: the server must stop
            raise
        await self.aclose()
        raise StopAsyncIteration

    # -- up to the first audio byte, with retries --------------------------------------------

    async def _first_bytes(self) -> bytes | None:
        client = self._client
        return await retrying(
            self._attempt,
            client.retry,
            limit_s=client.timeouts.first_byte_s,
            where=client.base_url,
            what="audio",
            phase="first_byte",
            cleanup=self._release,
        )

    async def _attempt(self, attempt: int) -> bytes | None:
        """Send the request and read up to the first audio bytes (None: an empty answer)."""
        self.attempts = attempt
        client = self._client
        response = await client.post(
            "audio/speech", content=self._body, headers={"content-type": "application/json"}
        )
        kind = response.headers.get("content-type", "")
        if kind.startswith(("application/json", "text/")):  # an error that says 200
            try:
                body = await read_capped(response)
            except httpx.TransportError:
                body = b""
            finally:
                await response.aclose()
            raise ProviderStreamError(
                f"{client.base_url} answered {kind} instead of audio: "
                f"{client.redact(error_message(body))}",
                attempts=attempt,
            )
        self._open(response, response.aiter_bytes())  # type: ignore[arg-type]
        try:
            return await self._read()
        except ProviderStreamError as exc:  # nothing was heard yet: worth another try
            raise ProviderConnectError(f"{exc} (before the first audio byte)") from exc

    # -- the rest of the audio, never retried ------------------------------------------------

    async def _next_bytes(self) -> bytes | None:
        return await timed(
            self._read(),
            self._client.timeouts.chunk_s,
            where=self._client.base_url,
            what="audio",
            during="speech",
            phase="next_chunk",
            attempts=self.attempts,
        )

    async def _read(self) -> bytes | None:
        """The next non-empty bytes of the body; None at its end."""
        chunks = self._parts
        if chunks is None:
            return None
        try:
            while True:
                data = await anext(chunks)
                if data:
                    self.received += len(data)
                    return data
        except StopAsyncIteration:
            return None
        except httpx.TransportError as exc:
            raise ProviderStreamError(
                f"{self._client.base_url}: the audio stream broke: {describe_exc(exc)}",
                attempts=self.attempts,
            ) from exc
