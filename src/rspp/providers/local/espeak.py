"""espeak-ng: the light TTS (formant synthesis: robotic, instant, tiny).

The library and its voice data ship in the ``espeakng-loader`` wheel and are
driven through ctypes in synchronous mode. espeak-ng is a process-global C
library, so synthesis is serialized by a lock.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

from rspp.providers.local.assets import MissingModel
from rspp.providers.local.blocking import load_once

__all__ = ["EspeakTts"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@load_once
def _engine() -> tuple[Any, int, threading.Lock]:
    try:
        import espeakng_loader
    except ImportError as exc:
        raise MissingModel("espeak-ng needs 'espeakng-loader' (pip install 'rspp[local]')") from exc
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
    lib.espeak_Initialize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
    if rate <= 0:
        raise RuntimeError("espeak-ng failed to initialise")
    return lib, rate, threading.Lock()


class EspeakTts:
    """An espeak-ng voice (blocking: call from the model thread pool)."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 175) -> None:
        self._lib, self.native_rate, self._lock = _engine()
        self.voice = voice
        self.words_per_minute = words_per_minute

    def synthesize(self, text: str) -> bytes:
        """``text`` as PCM16 mono at :attr:`native_rate`."""
        out = bytearray()

        def collect(wav: Any, count: int, events: Any) -> int:
            if count > 0:
                out.extend(ctypes.string_at(wav, count * 2))
            return 0

        callback = _CALLBACK(collect)
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            lib = self._lib
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {self.voice!r}")
            lib.espeak_SetParameter(_RATE, self.words_per_minute, 0)
            lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
        return bytes(out)
