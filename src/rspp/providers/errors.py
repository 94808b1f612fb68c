"""The errors a model provider raises: one family, so a node can tell a provider failure from a bug.

Every provider adapter raises a :class:`ProviderError` subclass for what went
wrong on the other side (a timeout, an HTTP error, a stream that broke) and
lets its own bugs surface as what they are. Messages say what failed and how
often it was tried; they never contain credentials.
"""

from __future__ import annotations

from rspp.kernel.errors import RsppError

__all__ = [
    "ProviderConfigError",
    "ProviderConnectError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderTimeout",
]


class ProviderError(RsppError):
    """A model provider failed a request. ``attempts`` is how many requests were sent."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (after {self.attempts} attempts)" if self.attempts > 1 else text


class ProviderConfigError(ProviderError):
    """The provider cannot be used as configured (e.g. its API key variable is not set)."""


class ProviderConnectError(ProviderError):
    """No response could be obtained: connection refused, reset or dropped (retries spent)."""


class ProviderTimeout(ProviderError, TimeoutError):
    """Nothing came in time. ``phase`` is ``"first_token"`` or ``"next_token"``."""

    def __init__(self, message: str, *, phase: str, timeout_s: float, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.phase = phase
        self.timeout_s = timeout_s


class ProviderStatusError(ProviderError):
    """The server answered with an HTTP error. ``message`` is the server's own explanation."""

    def __init__(
        self, status: int, message: str, *, attempts: int = 0, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {message}", attempts=attempts)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class ProviderStreamError(ProviderError):
    """The reply stream broke or reported an error; after output started this is never retried."""
