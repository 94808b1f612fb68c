"""Counters a session keeps about itself (the cluster layer exports them as metrics)."""

from __future__ import annotations

from collections import Counter

__all__ = ["SessionStats"]


class SessionStats:
    """What went wrong, was dropped or refused in one session, by cause."""

    __slots__ = ("abandoned", "drops", "errors", "rejected", "replies", "restarts")

    def __init__(self) -> None:
        #: (node, kind, reason) -> count of events dropped (fenced, no_reply, overload...).
        self.drops: Counter[tuple[str, str, str]] = Counter()
        #: node (or "sink:<name>") -> count of failures (handlers, tasks, sinks).
        self.errors: Counter[str] = Counter()
        #: reason -> count of rejected inputs and illegal events.
        self.rejected: Counter[str] = Counter()
        #: how replies ended: "played" or a turn.interrupted reason -> count.
        self.replies: Counter[str] = Counter()
        #: node -> how many times one of its tasks was restarted after dying.
        self.restarts: Counter[str] = Counter()
        #: names of tasks that ignored cancellation past the close deadline.
        self.abandoned: list[str] = []

    def dropped(self, reason: str | None = None) -> int:
        """Total drops, or drops for one reason."""
        return sum(n for (_, _, r), n in self.drops.items() if reason is None or r == reason)
