"""ASR over an OpenAI-compatible transcription API (OpenAI, ``rspp serve-audio``, speaches).

Like :mod:`rspp.nodes.asr_whisper`, it is not streaming: the node collects
the audio of each VAD speech segment (with the pre-roll of
:mod:`rspp.nodes.utterance`, so the first syllable is not lost) and, when the
segment ends, posts it as a WAV to ``{base_url}/audio/transcriptions``: one
``asr.final`` per segment, no partials.

The transcript is all-or-nothing, so every transient failure is retried
within ``response_timeout_ms`` (see :mod:`rspp.providers.openai.speech`). A
provider failure after that raises a :class:`~rspp.providers.errors.ProviderError`:
the kernel reports it as an ``error`` event, the segment has no final (the
turn manager falls back on its final timeout), and the next segment is
transcribed as usual. The connection pool lives as long as the session
(``run()`` owns it); the API key comes from the environment variable named by
``api_key_env``, never from the spec.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from rspp.kernel.node import NodeConfig
from rspp.nodes.asr_segment import SegmentAsr
from rspp.providers.openai.http import RetryPolicy, keep_open
from rspp.providers.openai.speech import TranscriptionClient, TranscriptionTimeouts

__all__ = ["OpenAiAsr", "OpenAiAsrConfig"]

Ms = Annotated[float, Meta(gt=0.0, le=600_000.0)]


class OpenAiAsrConfig(NodeConfig):
    #: The API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    base_url: Annotated[str, Meta(pattern=r"^https?://\S+$")]
    model: Annotated[str, Meta(min_length=1)] = "whisper-1"
    #: The environment variable that holds the API key (None: no key, e.g. a local server).
    api_key_env: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    #: The spoken language (ISO 639-1, e.g. ``en``); None: the server guesses.
    language: str | None = None
    #: Text that steers the transcription (names, spelling).
    prompt: str | None = None
    preroll_ms: Annotated[float, Meta(ge=0.0)] = 600.0
    #: The longest utterance kept (older audio of a longer one is dropped).
    max_utterance_s: Annotated[float, Meta(gt=0.0, le=600.0)] = 30.0
    connect_timeout_ms: Ms = 5_000.0
    #: From the request to the transcript, retries included.
    response_timeout_ms: Ms = 10_000.0
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    retry_backoff_ms: Annotated[float, Meta(ge=0.0, le=60_000.0)] = 250.0
    #: A longer ``Retry-After`` is not waited for.
    retry_after_max_ms: Annotated[float, Meta(ge=0.0, le=600_000.0)] = 5_000.0


class OpenAiAsr(SegmentAsr):
    """A transcription API, a final per VAD segment."""

    Config = OpenAiAsrConfig

    def __init__(self, config: OpenAiAsrConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.client = TranscriptionClient(
            config.base_url,
            model=config.model,
            api_key_env=config.api_key_env,
            language=config.language,
            prompt=config.prompt,
            timeouts=TranscriptionTimeouts(
                connect_s=config.connect_timeout_ms / 1000,
                response_s=config.response_timeout_ms / 1000,
            ),
            retry=RetryPolicy.from_ms(
                config.max_retries, config.retry_backoff_ms, config.retry_after_max_ms
            ),
        )

    async def transcribe(self, pcm: bytes, rate: int) -> str:
        if len(pcm) < rate // 5:  # under 0.1 s: nothing to recognise (servers refuse it)
            return ""
        return await self.client.transcribe(pcm, rate)

    async def run(self) -> None:
        """Own the connection pool for the session's life; close it when the session closes."""
        await keep_open(self.client)
