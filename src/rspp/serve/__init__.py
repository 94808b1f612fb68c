"""Servers that put RSPP's offline models behind standard HTTP APIs.

:mod:`rspp.serve.openai_audio` is an OpenAI-compatible audio server (Whisper
for transcription, Piper for speech); run it with ``rspp serve-audio``. Needs
the ``server`` and ``local`` extras.
"""
