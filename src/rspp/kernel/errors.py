"""The kernel's named errors. Each says what is wrong and where."""

from __future__ import annotations

__all__ = [
    "BuildError",
    "InvalidInput",
    "Overloaded",
    "RsppError",
    "SessionClosed",
    "SnapshotError",
    "TurnProtocolError",
]


class RsppError(Exception):
    """Base of every error the runtime raises on purpose."""


class _Problems(RsppError):
    """An error that lists every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


class BuildError(_Problems):
    """A pipeline spec cannot be built. ``problems`` lists every problem found."""


class TurnProtocolError(RsppError):
    """An event that is illegal in the current turn state (see ``rspp.kernel.turns``)."""


class InvalidInput(RsppError):
    """An event pushed into a session was rejected (wrong kind, wrong audio format)."""


class Overloaded(RsppError):
    """A push was refused: the node that takes it is full. Slow down and push again.

    ``await session.writable(kind)`` waits until there is room.
    """

    def __init__(self, node: str, kind: str, capacity: int) -> None:
        self.node = node
        self.kind = kind
        super().__init__(f"node {node!r} is full ({capacity} events queued): {kind!r} refused")


class SessionClosed(RsppError):
    """The session is closed (or not started) and takes no more input."""


class SnapshotError(_Problems):
    """A snapshot cannot be restored into this pipeline. ``problems`` lists why."""
