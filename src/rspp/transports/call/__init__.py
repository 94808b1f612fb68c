"""The RSPP call protocol (``docs/protocol.md``): wire format and sans-I/O endpoints."""

from rspp.transports.call.wire import (
    AUDIO_HEADER,
    PROTOCOL_VERSION,
    AudioFormat,
    AudioFrame,
    Bye,
    CallMessage,
    Hello,
    Latency,
    Ready,
    WireError,
    decode_audio_frame,
    decode_message,
    encode_audio_frame,
    encode_message,
)

__all__ = [
    "AUDIO_HEADER",
    "PROTOCOL_VERSION",
    "AudioFormat",
    "AudioFrame",
    "Bye",
    "CallMessage",
    "Hello",
    "Latency",
    "Ready",
    "WireError",
    "decode_audio_frame",
    "decode_message",
    "encode_audio_frame",
    "encode_message",
]
