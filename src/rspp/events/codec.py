"""Wire codecs: MessagePack between processes, JSON for browsers.

Both encode an event as a flat map whose ``kind`` field names the kind. In
MessagePack audio is a ``bin`` value (raw bytes, never base64, never a list of
samples); JSON has no bytes type, so there audio is base64 text.

Decoding is strict about shape and lenient about the future: a message of a
kind this process does not know decodes to :class:`~rspp.events.UnknownEvent`
(and re-encodes to the same content); fields it does not know are ignored.
Anything else -- truncated bytes, wrong types, a missing ``kind`` -- raises
:class:`DecodeError`, the one error type a transport has to catch.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from rspp.events.base import (
    HEADER_FIELDS,
    HEADER_INT_MAX,
    Event,
    UnknownEvent,
    known_kinds,
    registry_version,
)

__all__ = ["DecodeError", "JsonCodec", "MsgpackCodec", "decode", "encode"]


class DecodeError(ValueError):
    """Bytes that are not a valid event of this ABI."""


_HEADER_TYPES: dict[str, type] = {
    "session": str,
    "turn": int,
    "seq": int,
    "origin_ns": int,
    "inc": int,
    "pos": int,
}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what MessagePack can carry
_MAX_DEPTH = 64


def _check_portable(value: Any, depth: int = 0) -> None:
    """Reject what could not be re-encoded by both codecs (unknown kinds are passed on)."""
    if depth > _MAX_DEPTH:
        raise DecodeError(f"fields nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DecodeError("integer outside the 64-bit range")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"field names must be strings, got {type(key).__name__}")
            _check_portable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_portable(item, depth + 1)


def _unknown_from(obj: Any, cause: Exception) -> UnknownEvent:
    """Build an UnknownEvent from a generically decoded message, or raise DecodeError."""
    if not isinstance(obj, dict):
        raise DecodeError(f"an event must be a map, got {type(obj).__name__}") from cause
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise DecodeError("event has no string `kind` field") from cause
    if kind in known_kinds():
        # A known kind that failed validation: report the real reason.
        raise DecodeError(f"invalid {kind!r} event: {cause}") from cause
    header: dict[str, Any] = {}
    for name in HEADER_FIELDS:
        if name in obj:
            value = obj[name]
            want = _HEADER_TYPES[name]
            if type(value) is not want:  # bool is not an int here
                raise DecodeError(
                    f"invalid {kind!r} event: header field `{name}` must be {want.__name__}"
                ) from cause
            if isinstance(value, int) and not 0 <= value <= HEADER_INT_MAX:
                raise DecodeError(f"invalid {kind!r} event: `{name}` out of range") from cause
            header[name] = value
    fields = {k: v for k, v in obj.items() if k != "kind" and k not in _HEADER_TYPES}
    _check_portable(fields)
    return UnknownEvent(kind=kind, fields=fields, **header)


class _Codec:
    """Shared logic: a decoder for the union of known kinds, rebuilt when kinds are added."""

    _module: Any  # msgspec.msgpack or msgspec.json

    def __init__(self) -> None:
        self._encoder = self._module.Encoder()
        self._generic = self._module.Decoder()
        self._version = -1
        self._decoder: Any = None

    def _typed(self) -> Any:
        if self._version != registry_version():
            kinds = tuple(known_kinds().values())
            self._decoder = self._module.Decoder(Union[kinds])  # noqa: UP007
            self._version = registry_version()
        return self._decoder

    def encode(self, event: Event) -> bytes:
        """Encode one event."""
        if type(event) is UnknownEvent:
            return self._encoder.encode(event.to_wire())  # type: ignore[no-any-return]
        return self._encoder.encode(event)  # type: ignore[no-any-return]

    def decode(self, data: bytes | bytearray | memoryview | str) -> Event:
        """Decode one event; unknown kinds become UnknownEvent; garbage raises DecodeError."""
        try:
            return self._typed().decode(data)  # type: ignore[no-any-return]
        except msgspec.ValidationError as exc:
            # Perhaps a kind from a newer peer: look at it generically.
            try:
                obj = self._generic.decode(data)
            except (msgspec.DecodeError, ValueError, RecursionError) as exc2:
                raise DecodeError(f"malformed message: {exc2}") from exc2
            return _unknown_from(obj, exc)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"malformed message: {exc}") from exc
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # __post_init__ checks, bad UTF-8, absurd nesting surface here.
            raise DecodeError(f"invalid event: {exc}") from exc


class MsgpackCodec(_Codec):
    """MessagePack: the process-to-process wire format. Audio travels as ``bin``."""

    _module = msgspec.msgpack


class JsonCodec(_Codec):
    """JSON: the browser wire format. Audio travels as base64 text (JSON has no bytes)."""

    _module = msgspec.json


_MSGPACK = MsgpackCodec()


def encode(event: Event) -> bytes:
    """Encode one event as MessagePack."""
    return _MSGPACK.encode(event)


def decode(data: bytes | bytearray | memoryview) -> Event:
    """Decode one MessagePack event (see :class:`MsgpackCodec`)."""
    return _MSGPACK.decode(data)
