"""Twilio Media Streams: phone calls into sessions.

* :mod:`~rspp.transports.twilio.protocol` -- the server side of the Media
  Streams WebSocket protocol, sans I/O (frames in, events out; marks as the
  playback clock);
* :mod:`~rspp.transports.twilio.audio` -- G.711 μ-law and streaming resampling
  between 8 kHz and the pipeline's rate;
* :mod:`~rspp.transports.twilio.signature` -- ``X-Twilio-Signature``;
* :mod:`~rspp.transports.twilio.endpoint` -- the ASGI routes (``POST /twilio/voice``,
  ``WebSocket /twilio/stream``), a thin shell over the others.
"""

from rspp.transports.twilio.endpoint import Speaker, TwilioEndpoint, twilio_routes
from rspp.transports.twilio.protocol import MediaStream, ProtocolError
from rspp.transports.twilio.signature import (
    AUTH_TOKEN_ENV,
    SIGNATURE_HEADER,
    auth_token_from_env,
    compute_signature,
    validate_signature,
)

__all__ = [
    "AUTH_TOKEN_ENV",
    "SIGNATURE_HEADER",
    "MediaStream",
    "ProtocolError",
    "Speaker",
    "TwilioEndpoint",
    "auth_token_from_env",
    "compute_signature",
    "twilio_routes",
    "validate_signature",
]
