"""Small statistics shared by the benchmark scripts (run them from anywhere: they put
this folder on ``sys.path``)."""

from __future__ import annotations

import math

__all__ = ["percentile"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the value at 1-based rank ceil(q * n) of the sorted values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
