"""Node type registry: maps the ``type`` names used in specs to node classes.

Built-in types are listed by import path and imported on first use, so
building a pipeline imports only the nodes it uses. Third-party packages add
types with :meth:`NodeRegistry.register` or through the ``rspp.nodes`` entry
point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from rspp.kernel.node import Node

__all__ = ["NodeRegistry", "default_registry", "register_node"]

N = TypeVar("N", bound=type[Node[Any]])

#: Built-in node types (name -> "module:Class").
_BUILTIN = {
    "passthrough": "rspp.nodes.passthrough:PassThrough",
    "energy_vad": "rspp.nodes.energy_vad:EnergyVad",
    "silero_vad": "rspp.nodes.silero_vad:SileroVad",
    "webrtc_vad": "rspp.nodes.webrtc_vad:WebrtcVad",
    "pocketsphinx_asr": "rspp.nodes.asr_pocketsphinx:PocketsphinxAsr",
    "whisper_asr": "rspp.nodes.asr_whisper:WhisperAsr",
    "openai_asr": "rspp.nodes.asr_openai:OpenAiAsr",
    "llama_llm": "rspp.nodes.llm_llama:LlamaLlm",
    "openai_llm": "rspp.nodes.llm_openai:OpenAiLlm",
    "piper_tts": "rspp.nodes.tts_piper:PiperTtsNode",
    "espeak_tts": "rspp.nodes.tts_espeak:EspeakTtsNode",
    "openai_tts": "rspp.nodes.tts_openai:OpenAiTts",
    "commit_on_final": "rspp.nodes.commit_on_final:CommitOnFinal",
    "turn_manager": "rspp.nodes.turn_manager:TurnManagerNode",
    "audio_output": "rspp.nodes.audio_output:AudioOutput",
    "fake_asr": "rspp.testing.fakes:FakeAsr",
    "fake_llm": "rspp.testing.fakes:FakeLlm",
    "fake_tts": "rspp.testing.fakes:FakeTts",
}


class NodeRegistry:
    """Name -> node class, with lazy imports."""

    def __init__(self, lazy: dict[str, str] | None = None) -> None:
        self._classes: dict[str, type[Node[Any]]] = {}
        self._lazy: dict[str, str] = dict(lazy or {})

    def register(self, name: str) -> Callable[[N], N]:
        """Class decorator registering a node type under ``name``."""

        def deco(cls: N) -> N:
            existing = self._classes.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"node type {name!r} is already registered ({existing.__qualname__})"
                )
            self._classes[name] = cls
            self._lazy.pop(name, None)
            return cls

        return deco

    def add_lazy(self, name: str, target: str) -> None:
        """Register ``name`` as ``"module:Class"``, imported when first used."""
        self._lazy.setdefault(name, target)

    def get(self, name: str) -> type[Node[Any]] | None:
        """The class for ``name``, or None if no such type is registered."""
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        target = self._lazy.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise TypeError(f"{target} is not a Node subclass")
        self._classes[name] = cls
        return cls

    def copy(self) -> NodeRegistry:
        """An independent registry with the same types (add test or app types to it freely)."""
        clone = NodeRegistry(self._lazy)
        clone._classes.update(self._classes)
        return clone

    def names(self) -> list[str]:
        """Every registered type name."""
        return sorted({*self._classes, *self._lazy})


def _default() -> NodeRegistry:
    reg = NodeRegistry(_BUILTIN)
    for ep in entry_points(group="rspp.nodes"):
        reg.add_lazy(ep.name, ep.value)
    return reg


default_registry = _default()


def register_node(name: str) -> Callable[[N], N]:
    """Register a node type in the default registry."""
    return default_registry.register(name)
