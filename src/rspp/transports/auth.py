"""Who may call: tokens and browser origins (``docs/protocol.md``, authentication).

Two kinds of token open a call: the static token (``RSPP_TOKEN``), and
short-lived signed tokens ``v1.<expiry>.<nonce>.<hmac>`` (HMAC-SHA256 under
``RSPP_TOKEN_SECRET``), which a server issues without storing anything and
checks without a lookup -- so any gateway of a cluster can check a token
another issued. Resume tokens are signed the same way, bound to a session id.
Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Auth", "origin_allowed"]

_PREFIX = "v1"


def _sign(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


@dataclass
class Auth:
    """Token checks for one server. With no secret configured a random one is made."""

    static_token: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @classmethod
    def from_env(cls) -> Auth:
        """``RSPP_TOKEN`` (static) and ``RSPP_TOKEN_SECRET`` (signing) from the environment."""
        secret = os.environ.get("RSPP_TOKEN_SECRET")
        return cls(
            static_token=os.environ.get("RSPP_TOKEN") or None,
            secret=secret.encode() if secret else secrets.token_bytes(32),
        )

    def issue(self, ttl_s: float = 600.0, *, now: float | None = None) -> str:
        """A signed call token valid for ``ttl_s`` seconds."""
        expiry = int((time.time() if now is None else now) + ttl_s)
        body = f"{_PREFIX}.{expiry}.{secrets.token_hex(8)}"
        return f"{body}.{_sign(self.secret, body)}"

    def check(self, token: str, *, now: float | None = None) -> bool:
        """True for the static token or an unexpired token signed with this secret."""
        if not token:
            return False
        if self.static_token and hmac.compare_digest(token.encode(), self.static_token.encode()):
            return True
        return self._check_signed(token, "", now)

    def resume_token(self, session_id: str, ttl_s: float, *, now: float | None = None) -> str:
        """A token that resumes ``session_id`` (and only it) within ``ttl_s``."""
        expiry = int((time.time() if now is None else now) + ttl_s)
        body = f"{_PREFIX}.{expiry}.{session_id}"
        return f"{body}.{_sign(self.secret, 'resume:' + body)}"

    def resumed_session(self, token: str, *, now: float | None = None) -> str | None:
        """The session a valid resume token names, or None."""
        parts = token.split(".")
        if len(parts) != 4 or not self._check_signed(token, "resume:", now):
            return None
        return parts[2]

    def _check_signed(self, token: str, purpose: str, now: float | None) -> bool:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _PREFIX:
            return False
        body = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3].encode(), _sign(self.secret, purpose + body).encode()):
            return False
        try:
            expiry = int(parts[1])
        except ValueError:
            return False
        return (time.time() if now is None else now) < expiry


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """May a page from ``origin`` open a call? No Origin header: not a browser, allowed.

    ``allowed`` lists origins (``https://app.example.com``; ``*`` allows any);
    empty means only the server's own origin (the page it serves).
    """
    if origin is None:
        return True
    allowed = [a.rstrip("/") for a in allowed if a]
    if "*" in allowed:
        return True
    if allowed:
        return origin.rstrip("/") in allowed
    return bool(host) and urlsplit(origin).netloc == host
