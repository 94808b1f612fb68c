"""A node that forwards every event unchanged (a tap point, and the hop-overhead benchmark)."""

from __future__ import annotations

from typing import ClassVar

from rspp.events import Event
from rspp.kernel.node import Node, NodeConfig

__all__ = ["PassThrough"]


class PassThrough(Node[NodeConfig]):
    """Forwards whatever reaches it."""

    consumes: ClassVar[tuple[str, ...]] = ("*",)
    produces: ClassVar[tuple[str, ...]] = ("*",)

    def on_event(self, event: Event) -> None:
        self.ctx.emit(event, event)
