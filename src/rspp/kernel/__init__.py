"""The streaming graph kernel: specs, the node contract, sessions, and the turn machine."""

from rspp.kernel.errors import BuildError, InvalidInput, RsppError, SessionClosed, TurnProtocolError
from rspp.kernel.graph import NodePlan, Pipeline, build
from rspp.kernel.latency import TurnLatency
from rspp.kernel.node import Node, NodeConfig, NodeContext
from rspp.kernel.registry import NodeRegistry, default_registry, register_node
from rspp.kernel.session import Session, SessionSnapshot, SessionStats, Sink
from rspp.kernel.spec import INPUT, AudioSpec, NodeSpec, PipelineSpec, Policy, QueueSpec, load_spec

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
    "Pipeline",
    "PipelineSpec",
    "Policy",
    "QueueSpec",
    "RsppError",
    "Session",
    "SessionClosed",
    "SessionSnapshot",
    "SessionStats",
    "Sink",
    "TurnLatency",
    "TurnProtocolError",
    "build",
    "default_registry",
    "load_spec",
    "register_node",
]
