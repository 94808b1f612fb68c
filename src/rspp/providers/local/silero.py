"""Silero VAD v6, run directly with onnxruntime (no torch).

The model takes 512-sample chunks at 16 kHz (256 at 8 kHz) preceded by the
last 64 (32) samples of the previous chunk as context, and carries a
``[2, 1, 128]`` recurrent state between chunks. The ONNX session is loaded
once per process and shared (``run`` is thread-safe); each audio stream keeps
its own state in a :class:`SileroStream`.
"""

from __future__ import annotations

import threading

import numpy as np

from rspp.providers.local.assets import silero_vad_onnx
from rspp.providers.local.blocking import load_once

__all__ = ["SileroStream", "silero_session"]


@load_once
def silero_session() -> object:
    """The process-wide onnxruntime session for Silero VAD."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one 32 ms chunk is tiny: threads only add overhead
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(silero_vad_onnx()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class SileroStream:
    """Speech probabilities for one audio stream, chunk by chunk."""

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError("Silero VAD runs at 8000 or 16000 Hz")
        self.sample_rate = sample_rate
        self.chunk = 512 if sample_rate == 16000 else 256
        self._context_size = 64 if sample_rate == 16000 else 32
        self._session = silero_session()
        self._sr = np.array(sample_rate, dtype=np.int64)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(self._context_size, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def pending(self) -> int:
        """Samples received but not yet part of a complete chunk."""
        return len(self._pending)

    def state(self) -> tuple[bytes, bytes, bytes]:
        """The recurrent state, the context and the pending samples (float32 bytes)."""
        with self._lock:
            return self._state.tobytes(), self._context.tobytes(), self._pending.tobytes()

    def load(self, state: tuple[bytes, bytes, bytes]) -> None:
        """Take back what :meth:`state` returned."""
        with self._lock:
            self._state = np.frombuffer(state[0], dtype=np.float32).reshape(2, 1, 128).copy()
            self._context = np.frombuffer(state[1], dtype=np.float32).copy()
            self._pending = np.frombuffer(state[2], dtype=np.float32).copy()

    def push(self, pcm16: bytes) -> list[float]:
        """Add PCM16 audio; return the speech probability of every chunk completed (blocking)."""
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        with self._lock:
            pending = np.concatenate([self._pending, samples])
            probabilities = []
            n = self.chunk
            while len(pending) >= n:
                chunk, pending = pending[:n], pending[n:]
                window = np.concatenate([self._context, chunk])[None, :]
                out, self._state = self._session.run(  # type: ignore[attr-defined]
                    None, {"input": window, "state": self._state, "sr": self._sr}
                )
                self._context = chunk[-self._context_size :]
                probabilities.append(float(out[0][0]))
            self._pending = pending
        return probabilities
