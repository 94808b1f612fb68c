"""The LLM node over an OpenAI-compatible chat API (OpenAI, vLLM, Ollama, llama.cpp, Groq).

It answers reply roots (``turn.commit``, and ``turn.speculate`` when the
pipeline speculates) with ``llm.delta`` text as the server streams it and an
``llm.done``. The request is the system prompt, the session's conversation
(what the user actually heard of earlier replies) and the user's words. When
the runtime cancels the reply (a barge-in, a dropped speculation), the
``CancelledError`` closes the HTTP stream, and so the connection: the server
stops generating.

On a provider failure (after the retries that are safe: see
:mod:`rspp.providers.openai.chat`) the node yields ``LlmDone(finish_reason="error")``
and then raises. The ``llm.done`` comes first on purpose: it lets downstream
stages finish the turn cleanly -- a TTS speaks the part of the reply it has
(a half-sentence it was holding back) instead of waiting for text that will
never come -- while the exception reaches the kernel, which reports it as an
``error`` event. No further text follows it.

The connection pool lives as long as the session: the node's ``run()`` owns
it and closes it when the session closes. The API key comes from the
environment variable named by ``api_key_env``, never from the spec; a missing
variable fails the session at start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import Event, LlmDelta, LlmDone, TurnCommit, TurnSpeculate
from rspp.kernel.node import Node, NodeConfig
from rspp.providers.errors import ProviderError
from rspp.providers.openai.chat import ChatClient, RetryPolicy, Timeouts
from rspp.providers.openai.http import keep_open

__all__ = ["DEFAULT_SYSTEM", "OpenAiLlm", "OpenAiLlmConfig"]

DEFAULT_SYSTEM = (
    "You are a friendly voice assistant. Your words are spoken aloud: answer in one or two "
    "short sentences, with no lists, markdown or emoji."
)

Ms = Annotated[float, Meta(gt=0.0, le=600_000.0)]


class OpenAiLlmConfig(NodeConfig):
    #: The API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:11434/v1``.
    base_url: Annotated[str, Meta(pattern=r"^https?://\S+$")]
    model: Annotated[str, Meta(min_length=1)]
    #: The environment variable that holds the API key (None: no key, e.g. a local server).
    api_key_env: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    system: str = DEFAULT_SYSTEM
    max_tokens: Annotated[int, Meta(ge=1, le=131_072)] = 200
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.7
    stop: Annotated[list[str], Meta(max_length=4)] = []
    #: How many earlier messages of the conversation go into the request.
    history_messages: Annotated[int, Meta(ge=0)] = 20
    #: Other request fields, sent as they are (``top_p``, ``seed``, ``max_completion_tokens``...).
    extra_body: dict[str, Any] = {}
    connect_timeout_ms: Ms = 5_000.0
    #: From the request to the first token, retries included.
    first_token_timeout_ms: Ms = 15_000.0
    #: Between two tokens of a reply.
    token_timeout_ms: Ms = 10_000.0
    #: Retries before the first token (never after).
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    retry_backoff_ms: Annotated[float, Meta(ge=0.0, le=60_000.0)] = 250.0
    #: A longer ``Retry-After`` is not waited for.
    retry_after_max_ms: Annotated[float, Meta(ge=0.0, le=600_000.0)] = 5_000.0


class OpenAiLlm(Node[OpenAiLlmConfig]):
    """A chat model behind an OpenAI-compatible streaming API."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    accepts: ClassVar[tuple[str, ...]] = ("turn.speculate",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    Config = OpenAiLlmConfig

    def __init__(self, config: OpenAiLlmConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.client = ChatClient(
            config.base_url,
            model=config.model,
            api_key_env=config.api_key_env,
            timeouts=Timeouts(
                connect_s=config.connect_timeout_ms / 1000,
                first_token_s=config.first_token_timeout_ms / 1000,
                token_s=config.token_timeout_ms / 1000,
            ),
            retry=RetryPolicy.from_ms(
                config.max_retries, config.retry_backoff_ms, config.retry_after_max_ms
            ),
        )

    def messages(self, event: TurnCommit | TurnSpeculate) -> list[dict[str, str]]:
        """The request's messages: the system prompt, the history as heard, the user's words."""
        keep = self.config.history_messages
        history = self.ctx.conversation.history(before=event.turn)[-keep:] if keep else []
        messages = [{"role": "system", "content": self.config.system}] if self.config.system else []
        messages += [{"role": m.role, "content": m.text} for m in history if m.text]
        messages.append({"role": "user", "content": event.text})
        return messages

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, (TurnCommit, TurnSpeculate))
        cfg = self.config
        reply = self.client.stream(
            self.messages(event),
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            stop=cfg.stop,
            extra=cfg.extra_body,
        )
        try:
            async with reply:  # closed by a cancellation: the server stops generating
                async for text in reply:
                    yield LlmDelta(text=text)
        except ProviderError:
            yield LlmDone(finish_reason="error")  # downstream flushes what it has (module doc)
            raise
        yield LlmDone(finish_reason=reply.finish_reason or "stop")

    async def run(self) -> None:
        """Own the connection pool for the session's life; close it when the session closes."""
        await keep_open(self.client)
