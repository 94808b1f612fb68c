"""Transports: how callers reach a session over a network.

* :mod:`rspp.transports.call` -- RSPP's own WebSocket call protocol (browsers,
  the Python client): the wire format and sans-I/O state machines for both ends;
* :mod:`rspp.transports.twilio` -- Twilio Media Streams (telephony);
* :mod:`rspp.transports.port` -- the only interface a transport uses to talk to
  a session (push input, receive output, report playback, close), small enough
  to cross a process boundary;
* :mod:`rspp.transports.server` -- the ASGI app of ``rspp serve``.
"""
