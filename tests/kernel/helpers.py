"""Shared helpers for the kernel's session tests."""

from __future__ import annotations

from typing import Any

import msgspec

from rspp.kernel import Pipeline, PipelineSpec, build

from .toy_nodes import registry


def make_pipeline(nodes: list[dict[str, Any]], inputs: tuple[str, ...] = ("audio.in",)) -> Pipeline:
    """Build a pipeline from plain dicts with the test registry."""
    spec = msgspec.convert({"name": "test", "input": list(inputs), "nodes": nodes}, PipelineSpec)
    return build(spec, registry)


def barge_in_pipeline(
    *,
    llm: dict[str, Any] | None = None,
    tts: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
    relay_ms: float | None = None,
    vad: bool = False,
) -> Pipeline:
    """commit (pushed) -> fake LLM -> [slow relay] -> fake TTS -> audio output -> sink "client".

    With ``vad``, pushed user audio also goes through an energy VAD, whose speech
    starts emit ``control.interrupt`` from inside the pipeline.
    """
    nodes: list[dict[str, Any]] = [
        {"name": "llm", "type": "fake_llm", "inputs": ["input"], "config": llm or {}},
    ]
    if vad:
        nodes.append({"name": "vad", "type": "energy_vad", "inputs": ["input"]})
    upstream = "llm"
    if relay_ms is not None:
        nodes.append(
            {
                "name": "relay",
                "type": "slow_relay",
                "inputs": ["llm"],
                "config": {"delay_ms": relay_ms},
            }
        )
        upstream = "relay"
    nodes += [
        {"name": "tts", "type": "fake_tts", "inputs": [upstream], "config": tts or {}},
        {
            "name": "output",
            "type": "audio_output",
            "inputs": ["tts"],
            "sink": "client",
            "config": output or {},
        },
    ]
    inputs = ("turn.commit", "audio.in") if vad else ("turn.commit",)
    return make_pipeline(nodes, inputs=inputs)
