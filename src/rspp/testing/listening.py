"""What a caller heard, judged: replies heard once and whole, pauses, stale output.

For the cluster's failure tests and the chaos benchmark, which count *at the
client*, from what it actually received and played (:class:`~rspp.client.Call`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rspp.client import Call
from rspp.transports.call.client import Played

__all__ = ["Hearing", "judge", "until_heard"]


class Hearing:
    """Follows one call's playout: the silences inside each reply (ms)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self._end: dict[int, float] = {}
        #: Per turn, every silence inside it (between two pieces of its audio played).
        self.gaps: dict[int, list[float]] = {}
        self._bytes_per_s = 2 * call.record.output.channels * call.record.output.sample_rate
        call.on(self._on)

    def _on(self, notice: object) -> None:
        if not isinstance(notice, Played):
            return
        end = self._end.get(notice.turn)
        if end is not None:
            self.gaps.setdefault(notice.turn, []).append(max(0.0, (notice.at - end) * 1000))
        self._end[notice.turn] = notice.at + len(notice.pcm) / self._bytes_per_s

    def longest_gap(self, turn: int | None = None) -> float:
        """The longest silence inside reply ``turn`` (or any reply) so far, in ms."""
        if turn is not None:
            return max(self.gaps.get(turn, []), default=0.0)
        return max((max(g) for g in self.gaps.values() if g), default=0.0)


async def until_heard(call: Call, nth: int, heard_ms: float, timeout_s: float = 30.0) -> None:
    """Wait until the client has played ``heard_ms`` of its ``nth`` reply (1-based)."""

    def there() -> bool:
        replies = call.record.replies
        return len(replies) >= nth and replies[nth - 1].played_ms >= heard_ms

    await call.wait_for(there, timeout_s)


@dataclass
class Verdict:
    """What one call came to, counted at the client."""

    said: int
    answered: int
    #: Replies whose heard words are not their text once (repeated, or partly lost).
    doubled: list[tuple[int, str, str]] = field(default_factory=list)
    #: Output frames of an owner older than one already heard.
    stale_frames: int = 0
    longest_gap_ms: float = 0.0

    @property
    def lost(self) -> int:
        return max(0, self.said - self.answered)


def judge(call: Call, said: int, hearing: Hearing | None = None) -> Verdict:
    """Judge a call in which the caller said ``said`` lines (each expecting a reply)."""
    replies = [r for r in call.record.replies if r.ended]
    # One reply per user utterance: a reply that was cut by the caller's own barge-in
    # still answered it. A reply is doubled if its words were heard more than once.
    users = {r.user for r in replies if r.user}
    verdict = Verdict(said=said, answered=len(users))
    for r in replies:
        heard, text = " ".join(r.heard.split()), " ".join(r.reply.split())
        if r.interrupted:
            if not text.startswith(heard):
                verdict.doubled.append((r.turn, heard, text))
        elif heard != text:
            verdict.doubled.append((r.turn, heard, text))
    verdict.stale_frames = call.protocol.stale
    if hearing is not None:
        verdict.longest_gap_ms = hearing.longest_gap()
    return verdict
