"""``X-Twilio-Signature``: Twilio's published example, tampering, ports, the environment."""

from __future__ import annotations

import pytest

from rspp.transports.twilio.signature import (
    AUTH_TOKEN_ENV,
    auth_token_from_env,
    compute_signature,
    validate_signature,
)

# The worked example of Twilio's "Webhooks security" guide.
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilios_published_example() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == SIGNATURE
    assert validate_signature(TOKEN, SIGNATURE, URL, PARAMS)
    # Parameters are sorted by name: the order they arrive in does not matter.
    assert validate_signature(TOKEN, SIGNATURE, URL, list(reversed(PARAMS.items())))


def test_any_change_is_refused() -> None:
    assert not validate_signature(TOKEN, SIGNATURE, URL, {**PARAMS, "Digits": "9999"})
    assert not validate_signature(TOKEN, SIGNATURE, URL, {**PARAMS, "Extra": "1"})
    assert not validate_signature(TOKEN, SIGNATURE, URL.replace("bar=2", "bar=3"), PARAMS)
    assert not validate_signature(TOKEN, SIGNATURE, "https://evil.example/myapp.php", PARAMS)
    assert not validate_signature("54321", SIGNATURE, URL, PARAMS)
    assert not validate_signature(TOKEN, SIGNATURE[:-2], URL, PARAMS)
    assert not validate_signature(TOKEN, SIGNATURE.lower(), URL, PARAMS)


def test_no_token_or_no_signature_is_never_valid() -> None:
    assert not validate_signature(None, SIGNATURE, URL, PARAMS)
    assert not validate_signature("", SIGNATURE, URL, PARAMS)
    assert not validate_signature(TOKEN, None, URL, PARAMS)
    assert not validate_signature(TOKEN, "", URL, PARAMS)
    assert not validate_signature("", compute_signature("", URL, PARAMS), URL, PARAMS)


def test_default_ports_are_accepted_either_way() -> None:
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert validate_signature(TOKEN, SIGNATURE, with_port, PARAMS)
    signed_with_port = compute_signature(TOKEN, with_port, PARAMS)
    assert validate_signature(TOKEN, signed_with_port, URL, PARAMS)
    # Any other port is part of the URL.
    assert not validate_signature(TOKEN, SIGNATURE, URL.replace(".com/", ".com:8443/"), PARAMS)


def test_a_stream_handshake_is_signed_over_its_wss_url_alone() -> None:
    url = "wss://voice.example.com/twilio/stream"
    signature = compute_signature("secret", url)
    assert validate_signature("secret", signature, url)
    assert validate_signature("secret", signature, "wss://voice.example.com:443/twilio/stream")
    assert not validate_signature("secret", signature, "ws://voice.example.com/twilio/stream")


def test_repeated_parameters_count_each_value_sorted() -> None:
    pairs = [("B", "2"), ("A", "y"), ("A", "x")]
    assert compute_signature(TOKEN, "https://a.b/", pairs) == compute_signature(
        TOKEN, "https://a.b/", [("A", "x"), ("A", "y"), ("B", "2")]
    )
    assert compute_signature(TOKEN, "https://a.b/", pairs) != compute_signature(
        TOKEN, "https://a.b/", [("A", "x"), ("B", "2")]
    )


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    assert auth_token_from_env() is None
    monkeypatch.setenv(AUTH_TOKEN_ENV, "")
    assert auth_token_from_env() is None
    monkeypatch.setenv(AUTH_TOKEN_ENV, "abc")
    assert auth_token_from_env() == "abc"
