"""What ``rspp serve`` exports at ``/metrics`` (Prometheus text format).

One registry per server (tests run several in one process). The transport
counts what it sees: calls, turns, per-stage latency (from each turn's
``turn.latency`` metrics event), interruptions, drops and rejected input.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["DropExport", "ServerMetrics"]

#: Latency buckets in milliseconds: 10 ms to 10 s.
_MS_BUCKETS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


class DropExport:
    """Adds what one session's drop counters gained since the last look to the server's
    (``None``: to nowhere)."""

    __slots__ = ("_counter", "_seen")

    def __init__(self, counter: Counter | None) -> None:
        self._counter = counter
        self._seen: dict[tuple[str, str, str], int] = {}

    def update(self, drops: Mapping[tuple[str, str, str], int]) -> None:
        if self._counter is None:
            return
        seen = self._seen
        for key, n in drops.items():
            gained = n - seen.get(key, 0)
            if gained > 0:
                self._counter.labels(*key).inc(gained)
                seen[key] = n


class ServerMetrics:
    """The counters, gauges and histograms of one server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("rspp_active_calls", "Calls in progress", registry=r)
        self.calls = Counter(
            "rspp_calls", "Calls by how they ended", ["transport", "outcome"], registry=r
        )
        self.turns = Counter("rspp_turns", "Bot replies by outcome", ["outcome"], registry=r)
        self.interrupts = Counter("rspp_interrupts", "Replies interrupted", registry=r)
        self.stage_ms = Histogram(
            "rspp_stage_latency_ms",
            "Per-turn latency of each stage (ms)",
            ["stage"],
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "rspp_transport_rejected", "Client input refused, by reason", ["reason"], registry=r
        )
        self.closed = Counter(
            "rspp_transport_closed",
            "Connections closed by the server, by code",
            ["code"],
            registry=r,
        )
        self.dropped = Counter(
            "rspp_session_dropped",
            "Events the sessions dropped (fenced stale output, overload policies, output no"
            " caller took), by node, kind and reason",
            ["node", "kind", "reason"],
            registry=r,
        )
        self.errors = Counter("rspp_errors", "Error events sent to callers", ["code"], registry=r)
        self.twilio = Counter(
            "rspp_twilio", "Twilio media-stream happenings and refusals", ["what"], registry=r
        )

    def drops(self) -> DropExport:
        """A new exporter for one session's drop counters."""
        return DropExport(self.dropped)

    def latency(self, values: dict[str, float]) -> None:
        """One turn's ``turn.latency`` values (names ending in ``_ms`` are stages)."""
        for name, value in values.items():
            if name.endswith("_ms") and value == value:  # not NaN
                self.stage_ms.labels(name.removesuffix("_ms")).observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
