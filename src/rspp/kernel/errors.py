"""The kernel's named errors. Each says what is wrong and where."""

from __future__ import annotations

__all__ = ["BuildError", "InvalidInput", "RsppError", "SessionClosed", "TurnProtocolError"]


class RsppError(Exception):
    """Base of every error the runtime raises on purpose."""


class BuildError(RsppError):
    """A pipeline spec cannot be built. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


class TurnProtocolError(RsppError):
    """An event that is illegal in the current turn state (see ``rspp.kernel.turns``)."""


class InvalidInput(RsppError):
    """An event pushed into a session was rejected (wrong kind, wrong audio format)."""


class SessionClosed(RsppError):
    """The session is closed (or not started) and takes no more input."""
