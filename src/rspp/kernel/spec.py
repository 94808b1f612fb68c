"""Pipeline specs: a pipeline is data.

A :class:`PipelineSpec` names the nodes, their type, their config and their
wiring. It is plain data -- build it in Python, or load it from TOML or YAML
with :func:`load_spec` -- and it is checked only when it is built
(:func:`rspp.kernel.graph.build`), which reports every problem at once.

Example (TOML)::

    name = "echo"
    [[nodes]]
    name = "vad"
    type = "energy_vad"
    inputs = ["input"]          # "input" is the session's ingress
    config = { threshold_db = -40 }
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from rspp.kernel.errors import BuildError

__all__ = [
    "INPUT",
    "AudioSpec",
    "NodeSpec",
    "PipelineSpec",
    "Policy",
    "QueueSpec",
    "ReplySpec",
    "load_spec",
]

#: The reserved node name of the session ingress (what transports push into).
INPUT = "input"


class Policy(enum.StrEnum):
    """What a node's inbox does with an event of a kind when the inbox is full.

    ``block``: never drop; the streams feeding it are not pulled until there is
    space (events from inline cascades are admitted over capacity).
    ``drop_oldest``: drop the oldest queued event of the same kind (real-time
    input: latency never accumulates). ``drop_newest``: drop the incoming event.
    ``latest``: keep only the newest event of this kind queued, full or not
    (superseding data such as partial transcripts); with none of its kind
    queued it is admitted even over capacity, so it overshoots by at most one
    event per ``latest`` kind.
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    LATEST = "latest"


class _Spec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class QueueSpec(_Spec):
    """A queued node's inbox: its bound and per-kind overrides of the kinds' default policies."""

    capacity: int = 64
    policy: dict[str, Policy] = msgspec.field(default_factory=dict)


class AudioSpec(_Spec):
    """The audio format the session's ingress accepts."""

    sample_rate: int = 16000
    channels: int = 1


class ReplySpec(_Spec):
    """How the kernel watches over replies."""

    #: A committed reply whose output makes no progress for this long (not paused) is
    #: ended by the kernel, reason ``stalled``; 0 turns the deadline off. Longer than the
    #: provider adapters' own first-token timeouts, so that they report their failures.
    no_progress_ms: Annotated[float, msgspec.Meta(ge=0.0)] = 20_000.0


class NodeSpec(_Spec):
    """One node: its name, registered type, config, upstream nodes and optional sink."""

    name: str
    type: str
    inputs: list[str] = msgspec.field(default_factory=list)
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Name of a session sink (a transport to the client) that receives what this node emits.
    sink: str | None = None
    #: Run behind an inbox in its own task (None: the node type decides).
    queued: bool | None = None
    queue: QueueSpec = msgspec.field(default_factory=QueueSpec)
    #: How many times the kernel restarts the node's task (its worker, or its ``run()``)
    #: after it dies unexpectedly, before it fails the whole session instead.
    restarts: Annotated[int, msgspec.Meta(ge=0)] = 0


class PipelineSpec(_Spec):
    """A whole pipeline."""

    name: str
    nodes: list[NodeSpec]
    version: int = 1
    audio: AudioSpec = msgspec.field(default_factory=AudioSpec)
    reply: ReplySpec = msgspec.field(default_factory=ReplySpec)
    #: Kinds the ingress may produce (what transports push).
    input: list[str] = msgspec.field(default_factory=lambda: ["audio.in"])


def load_spec(
    source: str | Path, *, text: str | None = None, format: Literal["toml", "yaml"] | None = None
) -> PipelineSpec:
    """Load a spec from a ``.toml``/``.yaml`` file, or from ``text`` in the given format.

    Shape errors (a missing field, a wrong type, an unknown key) raise
    :class:`BuildError` naming the path inside the document.
    """
    path = Path(source)
    fmt = format or ("yaml" if path.suffix in (".yaml", ".yml") else "toml")
    try:
        data = path.read_bytes() if text is None else text.encode()
    except OSError as exc:
        raise BuildError([f"cannot read pipeline spec {path}: {exc.strerror}"]) from exc
    try:
        if fmt == "yaml":
            return msgspec.yaml.decode(data, type=PipelineSpec)
        return msgspec.toml.decode(data, type=PipelineSpec)
    except msgspec.ValidationError as exc:
        raise BuildError([f"{path}: {exc}"]) from exc
    except msgspec.DecodeError as exc:
        raise BuildError([f"{path}: not valid {fmt.upper()}: {exc}"]) from exc
