"""PocketSphinx: streaming speech recognition with the en-US model its wheel ships.

A decoder holds the acoustic and language models (about 0.7 s to load), so
decoders are pooled per process: a session borrows one for its lifetime and
returns it when it closes. A decoder is used by one session at a time, from the
model thread pool.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["DecoderPool", "SphinxStream"]


class DecoderPool:
    """Process-wide pool of PocketSphinx decoders (created on demand, reused)."""

    _free: list[Any] = []
    _lock = threading.Lock()

    @classmethod
    def borrow(cls, sample_rate: int = 16000) -> Any:
        with cls._lock:
            for i, decoder in enumerate(cls._free):
                if decoder.config["samprate"] == sample_rate:
                    return cls._free.pop(i)
        from pocketsphinx import Decoder

        return Decoder(samprate=sample_rate, loglevel="FATAL")

    @classmethod
    def give_back(cls, decoder: Any) -> None:
        with cls._lock:
            cls._free.append(decoder)


class SphinxStream:
    """One utterance at a time: feed audio, read the running hypothesis, end it."""

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self._decoder: Any = DecoderPool.borrow(sample_rate)
        self.active = False

    def start(self) -> None:
        if self.active:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self.active = True

    def feed(self, pcm16: bytes) -> str:
        """Decode more audio of the utterance; returns the hypothesis so far (blocking)."""
        self._decoder.process_raw(pcm16, False, False)
        hyp = self._decoder.hyp()
        return str(hyp.hypstr) if hyp is not None else ""

    def end(self) -> str:
        """Finish the utterance; returns the final hypothesis (blocking)."""
        if not self.active:
            return ""
        self._decoder.end_utt()
        self.active = False
        hyp = self._decoder.hyp()
        return str(hyp.hypstr) if hyp is not None else ""

    def close(self) -> None:
        """Give the decoder back to the pool."""
        if self.active:
            self._decoder.end_utt()
            self.active = False
        DecoderPool.give_back(self._decoder)
