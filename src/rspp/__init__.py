"""RSPP: a real-time streaming pipeline runtime for voice AI.

``rspp.events`` is the Event ABI, ``rspp.kernel`` the graph runtime and turn
machine, ``rspp.nodes`` the built-in nodes, ``rspp.testing`` the test kit
(virtual clock, scripted caller, fake models).
"""

from rspp.events import ABI_VERSION, Event
from rspp.kernel import Node, NodeConfig, Pipeline, PipelineSpec, Session, build, load_spec

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION",
    "Event",
    "Node",
    "NodeConfig",
    "Pipeline",
    "PipelineSpec",
    "Session",
    "__version__",
    "build",
    "load_spec",
]
