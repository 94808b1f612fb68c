"""What ``rspp serve`` exports at ``/metrics`` (Prometheus text format).

One registry per server (tests run several in one process). The transport
counts what it sees: calls, turns, per-stage latency (from each turn's
``turn.latency`` metrics event), interruptions, drops and rejected input.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServerMetrics"]

#: Latency buckets in milliseconds: 10 ms to 10 s.
_MS_BUCKETS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


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
            "rspp_transport_dropped", "Output events dropped, by reason", ["reason"], registry=r
        )
        self.errors = Counter("rspp_errors", "Error events sent to callers", ["code"], registry=r)
        self.twilio = Counter(
            "rspp_twilio", "Twilio media-stream happenings and refusals", ["what"], registry=r
        )

    def latency(self, values: dict[str, float]) -> None:
        """One turn's ``turn.latency`` values (names ending in ``_ms`` are stages)."""
        for name, value in values.items():
            if name.endswith("_ms") and value == value:  # not NaN
                self.stage_ms.labels(name.removesuffix("_ms")).observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
