"""The Python client of the RSPP call protocol (``docs/protocol.md``).

``async with Call.connect("ws://127.0.0.1:8000/v1/call", token=...) as call:``
-- send audio and typed text, interrupt, iterate over what happens, and find
in ``call.record`` what the bot said as the client played it and how long each
reply took to be heard. :class:`Caller` plays a script (a WAV, the demo's
lines) into a call in real time, as a person would.
"""

from rspp.client.call import Call, CallRefused, Disconnected, Notice, call_url
from rspp.client.caller import Caller, Line, Spoken, demo_lines, wav_line
from rspp.client.record import CallRecord, Transcript, TurnRecord

__all__ = [
    "Call",
    "CallRecord",
    "CallRefused",
    "Caller",
    "Disconnected",
    "Line",
    "Notice",
    "Spoken",
    "Transcript",
    "TurnRecord",
    "call_url",
    "demo_lines",
    "wav_line",
]
