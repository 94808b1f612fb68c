"""Where a session goes: the dispatchers' choice, as a pure function of the workers' beats.

A worker qualifies if it runs the session's pipeline, is not draining, is not
excluded (the worker it leaves), reads the session's checkpoints
(:func:`~rspp.cluster.worker.compatibility` at least the one asked for) and has
room. Among those, the one with the most room relative to its capacity, then
the least CPU. Several dispatchers work from beats up to a few hundred ms old,
so each also counts what it placed since a worker's last beat
(:class:`Placement`), and picks at random among the near-best, so that two
dispatchers do not pile a burst of calls on one worker.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from rspp.cluster.compat import reads
from rspp.cluster.records import Request, WorkerInfo

__all__ = ["Placement"]


class Placement:
    """Chooses a worker for each request; remembers its own recent placements."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        #: Per worker: (the beat time they are counted against, sessions placed since).
        self._placed: dict[str, tuple[int, int]] = {}

    def choose(self, request: Request, workers: Iterable[WorkerInfo]) -> WorkerInfo | None:
        scored: list[tuple[float, float, WorkerInfo]] = []
        for worker in workers:
            if worker.draining or worker.id in request.exclude:
                continue
            if request.pipeline and request.pipeline not in worker.pipelines:
                continue
            if not reads(worker.abi, request.needs):
                continue
            seen, placed = self._placed.get(worker.id, (0, 0))
            if seen != worker.seen_ms:
                placed = 0  # a newer beat counts them itself
            room = worker.capacity - worker.active - placed
            if room <= 0:
                continue
            scored.append((room / max(worker.capacity, 1), worker.cpu, worker))
        if not scored:
            return None
        if request.to:
            for _, _, worker in scored:
                if worker.id == request.to:
                    return self._took(worker)
        best = max(share for share, _, _ in scored)
        near = [item for item in scored if item[0] >= best - 0.1]
        near.sort(key=lambda item: (item[1], -item[0]))
        pick = self._rng.choice(near[:3])[2]
        return self._took(pick)

    def _took(self, worker: WorkerInfo) -> WorkerInfo:
        seen, placed = self._placed.get(worker.id, (0, 0))
        self._placed[worker.id] = (worker.seen_ms, (placed if seen == worker.seen_ms else 0) + 1)
        return worker
