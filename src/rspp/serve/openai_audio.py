"""A local OpenAI-compatible audio server backed by the offline models.

``rspp serve-audio`` answers the two audio endpoints of the OpenAI API with
the models that ship as packages, so the HTTP adapters
(:mod:`rspp.providers.openai.speech`, the ``openai_asr`` and ``openai_tts``
nodes) can run -- and be tested -- against a real server with no account and
no network:

``POST /v1/audio/transcriptions``  Whisper tiny.en. A multipart upload with a
    WAV ``file`` (16-bit PCM at any rate, mono or not: it is mixed down and
    resampled to 16 kHz); ``response_format`` ``json`` (``{"text": ...}``) or
    ``text``. English only.
``POST /v1/audio/speech``  Piper (the bundled voice). JSON ``{"input", "voice",
    "model", "response_format", "speed"}``; ``response_format`` ``pcm`` (raw
    24 kHz s16le mono, as OpenAI's) or ``wav`` (the default: this server has no
    MP3 encoder). The audio is streamed sentence by sentence: the first
    sentence leaves before the next one is synthesized.
``GET /v1/models``, ``GET /health``.

Any ``model`` and ``voice`` name is accepted (clients send ``whisper-1``,
``tts-1``, ``alloy``): there is one of each. Errors are OpenAI's JSON,
``{"error": {"message", "type", "param", "code"}}``, with a 4xx status for
every problem with the request. The models run in the model thread pool
(:mod:`rspp.providers.local.blocking`), never on the event loop.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from rspp.nodes.chunker import TextChunker
from rspp.providers.local.blocking import run_blocking

__all__ = ["SPEECH_RATE", "TRANSCRIBE_RATE", "create_app", "decode_wav", "main", "serve"]

log = logging.getLogger("rspp.serve")

#: The rate of the speech this server returns (OpenAI's ``pcm`` rate).
SPEECH_RATE = 24000
#: The rate Whisper listens at.
TRANSCRIBE_RATE = 16000
#: OpenAI's limits: 25 MB uploads, 4096 characters of speech input.
MAX_UPLOAD = 25 * 1024 * 1024
MAX_INPUT_CHARS = 4096

WHISPER_ID = "whisper-tiny.en"
PIPER_ID = "piper-joe"


class BadRequest(Exception):
    """A problem with the request, answered 4xx with OpenAI's error JSON."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


# --------------------------------------------------------------------------- WAV


def decode_wav(data: bytes) -> tuple[bytes, int]:
    """A WAV file as (PCM16 mono, its rate); :class:`BadRequest` for anything else.

    Integer PCM of 8, 16, 24 or 32 bits, any number of channels (averaged).
    """
    try:
        with wave.open(io.BytesIO(data)) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, struct.error, ValueError) as exc:
        raise BadRequest(
            f"the file is not a PCM WAV file ({exc or type(exc).__name__}); "
            "this server accepts WAV with integer PCM samples",
            param="file",
        ) from None
    if rate <= 0 or channels <= 0:
        raise BadRequest("the WAV file has no sample rate or no channels", param="file")
    usable = len(frames) // (width * channels) * width * channels
    raw = np.frombuffer(frames, dtype=np.uint8, count=usable).reshape(-1, width)
    if width == 1:  # unsigned 8-bit
        samples = (raw[:, 0].astype(np.int32) - 128) << 8
    elif width in (2, 3, 4):  # little-endian signed: keep the top 16 bits
        high = raw[:, -1].view(np.int8).astype(np.int32)
        samples = (high << 8) | raw[:, -2].astype(np.int32)
    else:
        raise BadRequest(f"{width * 8}-bit WAV samples are not supported", param="file")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int32)
    return bytes(samples.astype("<i2").tobytes()), rate


def wav_header(sample_rate: int, data_bytes: int = 0xFFFFFFFF) -> bytes:
    """A 16-bit mono WAV header; the default sizes say "streamed, length unknown"."""
    riff = 0xFFFFFFFF if data_bytes == 0xFFFFFFFF else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


# --------------------------------------------------------------------------- models


@dataclass
class _Models:
    """The offline models, loaded once when the server starts (not on the first request)."""

    cpu_threads: int = 2
    whisper: Any = None
    piper: Any = None

    def load(self) -> None:
        from rspp.providers.local.piper import PiperTts
        from rspp.providers.local.whisper import WhisperTranscriber

        if self.whisper is None:
            self.whisper = WhisperTranscriber(self.cpu_threads)
        if self.piper is None:
            self.piper = PiperTts()

    def transcribe(self, pcm16: bytes, rate: int) -> str:
        from rspp.providers.local.piper import resample_pcm16

        text: str = self.whisper.transcribe(
            resample_pcm16(pcm16, rate, TRANSCRIBE_RATE), TRANSCRIBE_RATE
        )
        return text

    def speak(self, text: str, speed: float) -> bytes:
        pcm: bytes = self.piper.synthesize(text, sample_rate=SPEECH_RATE, length_scale=1 / speed)
        return pcm


class _SpeechRequest(msgspec.Struct):
    input: str
    model: str = ""
    voice: str = ""
    response_format: str = "wav"
    speed: Annotated[float, Meta(ge=0.25, le=4.0)] = 1.0
    instructions: str | None = None


# --------------------------------------------------------------------------- endpoints


def create_app(*, cpu_threads: int = 2) -> Starlette:
    """The server as an ASGI app; the models load when it starts (its lifespan)."""
    models = _Models(cpu_threads)

    async def transcriptions(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest("expected a multipart/form-data upload with an audio 'file' field")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_UPLOAD:
            raise BadRequest(f"the upload is over {MAX_UPLOAD} bytes", param="file", status=413)
        async with request.form(max_files=1, max_fields=32) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadRequest("missing the audio 'file' field", param="file")
            data = await upload.read(MAX_UPLOAD + 1)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if len(data) > MAX_UPLOAD:
            raise BadRequest(f"the upload is over {MAX_UPLOAD} bytes", param="file", status=413)
        if not data:
            raise BadRequest("the audio 'file' is empty", param="file")
        response_format = fields.get("response_format") or "json"
        if response_format not in ("json", "text"):
            raise BadRequest(
                f"response_format {response_format!r} is not supported: use json or text",
                param="response_format",
            )
        language = (fields.get("language") or "en").lower()
        if not language.startswith("en"):
            raise BadRequest(
                f"this server's model ({WHISPER_ID}) transcribes English only, not {language!r}",
                param="language",
            )
        pcm, rate = decode_wav(data)
        text = await run_blocking(models.transcribe, pcm, rate)
        if response_format == "text":
            return PlainTextResponse(text + "\n")
        return JSONResponse({"text": text})

    async def speech(request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body(), type=_SpeechRequest)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid request: {exc}") from None
        except msgspec.DecodeError:
            raise BadRequest("the body must be a JSON object with an 'input' field") from None
        text = body.input.strip()
        if not text:
            raise BadRequest("'input' is empty: nothing to say", param="input")
        if len(text) > MAX_INPUT_CHARS:
            raise BadRequest(f"'input' is over {MAX_INPUT_CHARS} characters", param="input")
        fmt = body.response_format
        if fmt not in ("pcm", "wav"):
            raise BadRequest(
                f"response_format {fmt!r} is not supported: use pcm or wav",
                param="response_format",
            )
        media = "audio/wav" if fmt == "wav" else "audio/pcm"
        return StreamingResponse(
            _speak(text, body.speed, wav=fmt == "wav"),
            media_type=media,
            headers={"x-sample-rate": str(SPEECH_RATE)},
        )

    async def _speak(text: str, speed: float, *, wav: bool) -> AsyncIterator[bytes]:
        """The speech of ``text``, a sentence at a time (a client that leaves cancels it)."""
        if wav:
            yield wav_header(SPEECH_RATE)
        chunker = TextChunker("sentence")
        pieces = [*chunker.push(text), chunker.flush()]
        for piece in pieces:
            if piece.strip():
                yield await run_blocking(models.speak, piece, speed)

    async def list_models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "rspp"}
            for name in (WHISPER_ID, PIPER_ID)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        return _error(exc.status, exc.message, "invalid_request_error", exc.param)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _error(exc.status_code, str(exc.detail), kind)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %r", request.method, request.url.path, exc, exc_info=exc)
        return _error(500, f"the server failed: {type(exc).__name__}", "server_error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_blocking(models.load)
        yield

    app = Starlette(
        routes=[
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={
            BadRequest: bad_request,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.state.models = models  # for tests and embedding apps
    return app


# --------------------------------------------------------------------------- running it


def serve(host: str = "127.0.0.1", port: int = 8000, *, cpu_threads: int = 2) -> None:
    """Run the server until interrupted."""
    import uvicorn

    log.info("serving OpenAI-compatible audio on http://%s:%d/v1", host, port)
    uvicorn.run(create_app(cpu_threads=cpu_threads), host=host, port=port, log_level="info")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's command-line options (shared with ``rspp serve-audio``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for Whisper")


def main(argv: list[str] | None = None) -> int:
    """``python -m rspp.serve.openai_audio [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    serve(args.host, args.port, cpu_threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
