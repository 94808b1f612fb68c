"""OpenAI-compatible HTTP APIs (OpenAI, vLLM, Ollama, llama.cpp servers, Groq, ...).

Needs the ``providers`` extra (httpx).
"""

from rspp.providers.errors import (
    ProviderConfigError,
    ProviderConnectError,
    ProviderError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderTimeout,
)
from rspp.providers.openai.chat import ChatClient, ChatStream, Message, RetryPolicy, Timeouts

__all__ = [
    "ChatClient",
    "ChatStream",
    "Message",
    "ProviderConfigError",
    "ProviderConnectError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderTimeout",
    "RetryPolicy",
    "Timeouts",
]
