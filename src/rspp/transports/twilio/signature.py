"""``X-Twilio-Signature``: proof that a request came from Twilio.

Twilio's documented scheme ("Webhooks security"): take the full URL Twilio
requested (scheme, host, path and query string), append every POST parameter
sorted by name as name immediately followed by value (no separators; a name
sent several times contributes each of its values, sorted), HMAC-SHA1 the
result keyed with the account's auth token, and base64 the digest. The header
must equal it; we compare in constant time. Twilio signs the WebSocket
handshake of a Media Stream the same way (the ``wss://`` URL, no parameters).

Because proxies and Twilio's own signer disagree about default ports, a URL
that validates with or without its default port (``:443`` for https and wss,
``:80`` for http and ws) is accepted, as Twilio's helper libraries do.

Pure: no request object, no environment except in :func:`auth_token_from_env`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "AUTH_TOKEN_ENV",
    "SIGNATURE_HEADER",
    "auth_token_from_env",
    "compute_signature",
    "validate_signature",
]

#: The header Twilio signs its requests with.
SIGNATURE_HEADER: Final = "X-Twilio-Signature"
#: Where the account's auth token is read from.
AUTH_TOKEN_ENV: Final = "TWILIO_AUTH_TOKEN"

_DEFAULT_PORTS: Final = {"https": 443, "wss": 443, "http": 80, "ws": 80}

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def auth_token_from_env() -> str | None:
    """The auth token from ``TWILIO_AUTH_TOKEN``; ``None`` when unset or empty."""
    return os.environ.get(AUTH_TOKEN_ENV) or None


def compute_signature(auth_token: str, url: str, params: Params = ()) -> str:
    """The signature Twilio sends for a request to ``url`` with POST ``params``."""
    pairs = params.items() if isinstance(params, Mapping) else params
    data = url + "".join(name + value for name, value in sorted(pairs))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def validate_signature(
    auth_token: str | None, signature: str | None, url: str, params: Params = ()
) -> bool:
    """Whether ``signature`` is Twilio's for ``url`` and ``params`` (False without a token)."""
    if not auth_token or not signature:
        return False
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    given = signature.encode()
    valid = False
    for candidate in _with_and_without_port(url):
        expected = compute_signature(auth_token, candidate, pairs).encode()
        valid |= hmac.compare_digest(expected, given)
    return valid


def _with_and_without_port(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return (url,)
    if default is None or (port is not None and port != default):
        return (url,)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    auth = parts.netloc.rpartition("@")[0]
    prefix = f"{auth}@" if auth else ""
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    ported = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    return tuple(dict.fromkeys((url, bare, ported)))
