"""Which worker reads which checkpoints: the guard of a rolling upgrade.

A checkpoint is a kernel snapshot (its format number) of events of one ABI
(its major version). A worker reads a checkpoint if its snapshot format is at
least the checkpoint's and its ABI major is the same: a newer worker takes a
session over from an older one, never the other way round. A session whose
checkpoint no live worker reads stays where it is (a drain keeps it, a move
is refused with the reason); a worker that is handed one anyway refuses it
with the kernel's :class:`~rspp.kernel.errors.SnapshotError` and gives it back.
"""

from __future__ import annotations

from rspp.events import ABI_VERSION
from rspp.kernel.snapshot import SNAPSHOT_FORMAT

__all__ = ["compatibility", "needs_of", "reads"]


def compatibility() -> str:
    """What checkpoints this runtime reads and writes: ``<snapshot format>.<ABI major>``."""
    return needs_of(SNAPSHOT_FORMAT, ABI_VERSION)


def needs_of(snapshot_format: int, abi: str) -> str:
    """What a checkpoint of that snapshot format and ABI needs of its reader."""
    return f"{snapshot_format}.{abi.split('.')[0]}"


def reads(worker: str, needs: str) -> bool:
    """Does a worker of :func:`compatibility` ``worker`` read checkpoints that need ``needs``?"""
    if not needs or not worker:
        return True
    try:
        have = [int(part) for part in worker.split(".")]
        want = [int(part) for part in needs.split(".")]
    except ValueError:
        return False
    return have[0] >= want[0] and have[1:] == want[1:]
