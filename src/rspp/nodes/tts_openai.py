"""TTS over an OpenAI-compatible speech API (OpenAI, ``rspp serve-audio``, Kokoro servers).

Each piece the chunker releases (see :mod:`rspp.nodes.tts_base`) is posted to
``{base_url}/audio/speech`` and its raw PCM is streamed out as it arrives, in
``chunk_ms`` chunks resampled to the session's rate: the first audio leaves
before the server has finished the piece. A cancelled reply closes the HTTP
stream, and so the connection: the server stops synthesizing.

Words. :func:`~rspp.nodes.tts_base.audio_chunks` spreads a piece's words over
its chunks knowing the audio's length; a stream does not know it until its
end. :class:`WordPacer` spreads them the same way against an *estimate* of
the length (the piece's characters times a speaking rate the node learns
from the pieces it has heard), never hands out the last word before the last
chunk, and gives that chunk whatever is left. So the text of the chunks
played is what the user heard, to a word or two, even when a barge-in cuts a
piece.

On a provider failure (after the retries that are safe: only before a
piece's first audio byte) the node yields ``tts.done`` and then raises: the
audio already sent plays out and the reply ends -- the output's ``turn.done``
comes from ``tts.done`` -- while the kernel reports the exception as an
``error`` event. The rest of that reply's text is dropped, so it ends once.
The connection pool lives as long as the session (``run()`` owns it); the API
key comes from the environment variable named by ``api_key_env``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import Event, LlmDone, TtsAudio, TtsDone
from rspp.nodes.tts_base import ChunkedTts, TtsConfig
from rspp.providers.errors import ProviderError
from rspp.providers.openai.http import RetryPolicy, keep_open
from rspp.providers.openai.speech import SpeechClient, SpeechTimeouts

__all__ = ["OpenAiTts", "OpenAiTtsConfig", "WordPacer"]

Ms = Annotated[float, Meta(gt=0.0, le=600_000.0)]

#: The boundaries ``rspp.nodes.text.spread_words`` cuts at (pieces keep their whitespace).
_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")
#: A first guess of the speaking rate (about 14 characters a second), until one is measured.
_NS_PER_CHAR = 70_000_000


class OpenAiTtsConfig(TtsConfig, kw_only=True):
    #: The API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    base_url: Annotated[str, Meta(pattern=r"^https?://\S+$")]
    model: Annotated[str, Meta(min_length=1)] = "tts-1"
    voice: Annotated[str, Meta(min_length=1)] = "alloy"
    #: The environment variable that holds the API key (None: no key, e.g. a local server).
    api_key_env: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    #: Speaking rate (1: normal); None: the server's default.
    speed: Annotated[float, Meta(ge=0.25, le=4.0)] | None = None
    #: The rate of the server's raw PCM (24 kHz for OpenAI and ``rspp serve-audio``).
    source_rate: Annotated[int, Meta(ge=1000, le=384_000)] = 24000
    #: Other request fields, sent as they are (``instructions``, ...).
    extra_body: dict[str, Any] = {}
    connect_timeout_ms: Ms = 5_000.0
    #: From the request to a piece's first audio byte, retries included.
    first_byte_timeout_ms: Ms = 10_000.0
    #: Between two chunks of a piece's audio.
    chunk_timeout_ms: Ms = 10_000.0
    #: Retries before a piece's first audio byte (never after).
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    retry_backoff_ms: Annotated[float, Meta(ge=0.0, le=60_000.0)] = 250.0
    #: A longer ``Retry-After`` is not waited for.
    retry_after_max_ms: Annotated[float, Meta(ge=0.0, le=600_000.0)] = 5_000.0


class WordPacer:
    """Hands out a piece's words as its audio streams in, before its length is known.

    Sans I/O. :meth:`take` is told the length of each chunk and returns the
    words that end by its end (as :func:`~rspp.nodes.text.spread_words` would
    place them if the piece lasted ``expected_ns``), keeping the last word
    back; :meth:`rest` returns what is left, for the last chunk.
    """

    __slots__ = ("_given", "_heard_ns", "_words", "expected_ns")

    def __init__(self, text: str, expected_ns: int) -> None:
        self._words = [w for w in _WORD_BOUNDARY.split(text) if w]
        self._given = 0
        self._heard_ns = 0
        self.expected_ns = max(1, expected_ns)

    def take(self, duration_ns: int) -> str:
        """The words of the next chunk, which lasts ``duration_ns``."""
        self._heard_ns += duration_ns
        n = len(self._words)
        due = min(n - 1, n * self._heard_ns // self.expected_ns)
        if due <= self._given:
            return ""
        words = "".join(self._words[self._given : due])
        self._given = due
        return words

    def rest(self) -> str:
        """The words not handed out yet (for the last chunk)."""
        words = "".join(self._words[self._given :])
        self._given = len(self._words)
        return words


class OpenAiTts(ChunkedTts):
    """A speech API, streamed a piece at a time."""

    Config: ClassVar[type[OpenAiTtsConfig]] = OpenAiTtsConfig

    def __init__(self, config: OpenAiTtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.client = SpeechClient(
            config.base_url,
            model=config.model,
            voice=config.voice,
            api_key_env=config.api_key_env,
            speed=config.speed,
            source_rate=config.source_rate,
            timeouts=SpeechTimeouts(
                connect_s=config.connect_timeout_ms / 1000,
                first_byte_s=config.first_byte_timeout_ms / 1000,
                chunk_s=config.chunk_timeout_ms / 1000,
            ),
            retry=RetryPolicy.from_ms(
                config.max_retries, config.retry_backoff_ms, config.retry_after_max_ms
            ),
        )
        #: The speaking rate, learned from the pieces heard (ns of audio per character).
        self.ns_per_char = _NS_PER_CHAR / (config.speed or 1.0)
        self._failed: set[int] = set()  # turns whose reply ended on a provider failure

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        turn = event.turn
        self._failed = {t for t in self._failed if not self.ctx.is_fenced(t)}
        if turn in self._failed:  # the reply already ended: drop the rest of its text
            if isinstance(event, LlmDone):
                self._failed.discard(turn)
                self._chunkers.pop(turn, None)
            return
        try:
            async for out in super().stream(event):
                yield out
        except ProviderError:
            if not isinstance(event, LlmDone):  # more text of this reply will come
                self._failed.add(turn)
                self._chunkers.pop(turn, None)
            yield TtsDone()  # the audio sent plays out and the turn ends (module doc)
            raise

    async def synthesize(self, text: str, turn: int, skip: int = 0) -> AsyncIterator[TtsAudio]:
        cfg = self.config
        index = 0  # chunks made; the first ``skip`` went out before the session moved
        rate = cfg.sample_rate
        step = max(2, int(rate * cfg.chunk_ms / 1000) * 2)
        chars = len(text.strip())
        pacer = WordPacer(text, int(chars * self.ns_per_char))
        pending = bytearray()
        total = 0
        audio = self.client.speak(text, sample_rate=rate, extra=cfg.extra_body)
        async with audio:  # closed by a cancellation: the server stops synthesizing
            async for pcm in audio:
                pending += pcm
                total += len(pcm)
                while len(pending) > step:  # hold the last chunk back: it takes the last words
                    chunk = bytes(pending[:step])
                    del pending[:step]
                    words = pacer.take(len(chunk) * 500_000_000 // rate)
                    index += 1
                    if index > skip:
                        yield TtsAudio(pcm=chunk, sample_rate=rate, text=words)
        if pending and index >= skip:
            yield TtsAudio(pcm=bytes(pending), sample_rate=rate, text=pacer.rest())
        if chars >= 10 and total:
            measured = total * 500_000_000 / rate / chars
            self.ns_per_char = 0.7 * self.ns_per_char + 0.3 * measured

    async def run(self) -> None:
        """Own the connection pool for the session's life; close it when the session closes."""
        await keep_open(self.client)
