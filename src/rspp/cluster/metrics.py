"""What each cluster role exports at ``/metrics`` (Prometheus), one registry per role."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["DispatcherMetrics", "GatewayMetrics", "StoreTimer", "WorkerMetrics"]

_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class StoreTimer:
    """Store round-trip latency and errors, by operation."""

    def __init__(self, registry: CollectorRegistry, role: str) -> None:
        self.latency = Histogram(
            "rspp_store_latency_ms",
            "Store round trips (ms), by operation",
            ["role", "op"],
            buckets=_MS,
            registry=registry,
        )
        self.errors = Counter(
            "rspp_store_errors",
            "Store operations that failed, by operation",
            ["role", "op"],
            registry=registry,
        )
        self.role = role

    @asynccontextmanager
    async def time(self, op: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.failed(op)
            raise
        self.observe(op, (time.perf_counter() - started) * 1000)

    def observe(self, op: str, ms: float) -> None:
        """A round trip timed elsewhere (another thread's, say)."""
        self.latency.labels(self.role, op).observe(ms)

    def failed(self, op: str) -> None:
        self.errors.labels(self.role, op).inc()


class _Role:
    def __init__(self, role: str, registry: CollectorRegistry | None) -> None:
        self.registry = registry or CollectorRegistry()
        self.store = StoreTimer(self.registry, role)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics(_Role):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("worker", registry)
        r = self.registry
        self.active = Gauge("rspp_worker_sessions", "Sessions this worker owns now", registry=r)
        self.capacity = Gauge("rspp_worker_capacity", "Sessions this worker may own", registry=r)
        self.draining = Gauge("rspp_worker_draining", "1 while the worker drains", registry=r)
        self.renewals = Counter(
            "rspp_lease_renewals",
            "Lease renewals, by result (ok, lost, store_down)",
            ["result"],
            registry=r,
        )
        self.lost = Counter(
            "rspp_leases_lost",
            "Sessions this worker stopped because another owns them now",
            registry=r,
        )
        self.takeovers = Counter(
            "rspp_takeovers", "Sessions taken, by why (open, failover, move)", ["why"], registry=r
        )
        self.takeover_ms = Histogram(
            "rspp_takeover_duration_ms",
            "From the task to take a session to its first output (ms)",
            ["why"],
            buckets=_MS,
            registry=r,
        )
        self.migrations = Counter(
            "rspp_migrations", "Sessions handed over, by why (move, drain)", ["why"], registry=r
        )
        self.checkpoints = Counter(
            "rspp_checkpoints", "Checkpoints written, by result", ["result"], registry=r
        )
        self.refused = Counter(
            "rspp_restore_refused", "Checkpoints this worker could not restore", registry=r
        )
        self.output_dropped = Counter(
            "rspp_worker_output_dropped",
            "Output dropped because the store was away too long",
            registry=r,
        )
        self.loop_lag_ms = Histogram(
            "rspp_worker_loop_lag_ms",
            "How late the event loop ran a 50 ms tick (ms): a stalled loop lets leases lapse",
            buckets=_MS,
            registry=r,
        )


class DispatcherMetrics(_Role):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("dispatcher", registry)
        r = self.registry
        self.decisions = Counter(
            "rspp_dispatch_decisions",
            "Placements, by why (open, failover, move) and outcome (placed, refused, retry)",
            ["why", "outcome"],
            registry=r,
        )
        self.workers = Gauge("rspp_dispatch_workers", "Live workers seen", registry=r)
        self.room = Gauge("rspp_dispatch_room", "Free session slots on live workers", registry=r)
        self.orphans = Counter(
            "rspp_dispatch_orphans", "Sessions found with a lapsed lease and claimed", registry=r
        )
        self.workers_gone = Counter(
            "rspp_dispatch_workers_gone",
            "Workers whose presence in the store ended (their process died): failed over",
            registry=r,
        )


class GatewayMetrics(_Role):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("gateway", registry)
        r = self.registry
        self.duplicates = Counter(
            "rspp_gateway_output_duplicates",
            "Output events a new owner repeated, dropped",
            registry=r,
        )
        self.stale = Counter(
            "rspp_gateway_output_stale",
            "Output events from an owner that was replaced, dropped",
            registry=r,
        )
        self.refused = Counter(
            "rspp_gateway_refused", "Calls the cluster refused, by reason", ["reason"], registry=r
        )
        self.input_dropped = Counter(
            "rspp_gateway_input_dropped",
            "Input dropped while the store was away too long",
            registry=r,
        )
