"""The streaming graph kernel: specs, the node contract, sessions, and the turn machine."""

from rspp.kernel.errors import (
    BuildError,
    InvalidInput,
    Overloaded,
    RsppError,
    SessionClosed,
    SnapshotError,
    TurnProtocolError,
)
from rspp.kernel.graph import NodePlan, Pipeline, build
from rspp.kernel.latency import TurnLatency
from rspp.kernel.node import Node, NodeConfig, NodeContext
from rspp.kernel.registry import NodeRegistry, default_registry, register_node
from rspp.kernel.session import Session
from rspp.kernel.sinks import Sink
from rspp.kernel.snapshot import SessionSnapshot
from rspp.kernel.spec import (
    INPUT,
    AudioSpec,
    NodeSpec,
    PipelineSpec,
    Policy,
    QueueSpec,
    ReplySpec,
    load_spec,
)
from rspp.kernel.stats import SessionStats

__all__ = [
    "INPUT",
    "AudioSpec",
    "BuildError",
    "InvalidInput",
    "Node",
    "NodeConfig",
    "NodeContext",
    "NodePlan",
    "NodeRegistry",
    "NodeSpec",
    "Overloaded",
    "Pipeline",
    "PipelineSpec",
    "Policy",
    "QueueSpec",
    "ReplySpec",
    "RsppError",
    "Session",
    "SessionClosed",
    "SessionSnapshot",
    "SessionStats",
    "Sink",
    "SnapshotError",
    "TurnLatency",
    "TurnProtocolError",
    "build",
    "default_registry",
    "load_spec",
    "register_node",
]
