"""A worker's lease renewals, from a thread (and event loop, and store client) of their own.

Why: on saturated cores a worker's event loop runs every ready callback before it reads
a reply, so a renewal made from it was measured taking 200-535 ms on the chaos
benchmark's machine while no loop tick was late by more than ~230 ms -- live leases
lapsed and were failed over with no fault behind them (``BENCHMARKS.md``). A renewal
from here waits for the GIL, not for the loop's queue.

What keeps it honest: it renews only while the worker's loop is alive. The loop calls
:meth:`Renewer.tick` (with the leases it owns now) every 50 ms; when no tick has come
for ``alive_within_s`` the renewer stops vouching, so a worker whose loop has hung loses
its sessions to a live one exactly as a dead worker does. What the store answers goes
back to the loop (``on_result`` / ``on_trouble``, through ``call_soon_threadsafe``),
where the sessions are.

It also holds the worker's *presence* (:meth:`SessionStore.hold_presence`) on its own
connection, for as long as the process lives: a worker that dies is seen gone by the
dispatchers at once, and its sessions fail over without waiting for their TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from rspp.cluster.records import Lease
from rspp.cluster.store import SessionStore, StoreError, StoreUnavailable

__all__ = ["Renewer"]

log = logging.getLogger("rspp.cluster.worker")


class Renewer:
    """Renews the leases the loop last ticked with, every ``every_s``, from a thread."""

    def __init__(
        self,
        connect: Callable[[], SessionStore],
        *,
        ttl_ms: int,
        every_s: float,
        alive_within_s: float,
        on_result: Callable[[Sequence[Lease], list[bool], float], None],
        on_trouble: Callable[[Sequence[Lease], StoreError], None],
        presence: str = "",
    ) -> None:
        """``presence``: the worker id to hold the presence of ("" for none)."""
        self._connect = connect
        self.presence = presence
        self.ttl_ms = ttl_ms
        self.every_s = every_s
        self.alive_within_s = alive_within_s
        self._on_result = on_result
        self._on_trouble = on_trouble
        self._leases: tuple[Lease, ...] = ()
        self._tick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Rounds skipped because the worker's loop had not ticked in time.
        self.skipped = 0

    def tick(self, leases: tuple[Lease, ...]) -> None:
        """From the worker's loop: it is alive, and these are the leases it owns now."""
        self._leases = leases  # (one reference swapped: atomic under the GIL)
        self._tick = time.monotonic()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick = time.monotonic()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="rspp-lease-renewer", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop renewing and wait for the thread (it notices within one period)."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    def _reply(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody to tell
            loop.call_soon_threadsafe(callback, *args)

    async def _run(self) -> None:
        store = self._connect()
        present = asyncio.create_task(store.hold_presence(self.presence)) if self.presence else None
        try:
            while not self._stop.is_set():
                await asyncio.sleep(self.every_s)
                leases = self._leases
                if not leases or self._stop.is_set():
                    continue
                if time.monotonic() - self._tick > self.alive_within_s:
                    self.skipped += 1  # the loop is stuck: no more vouching for it
                    continue
                began = time.monotonic()
                try:
                    results = await store.renew(leases, self.ttl_ms)
                except StoreError as exc:
                    self._reply(self._on_trouble, leases, exc)
                    continue
                self._reply(self._on_result, leases, results, time.monotonic() - began)
        except Exception:
            log.exception("the lease renewer failed")
            self._reply(self._on_trouble, self._leases, StoreUnavailable("lease renewer failed"))
        finally:
            if present is not None:
                present.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await present
            try:
                await store.close()
            except Exception:  # (closing a client on the way out: nothing left to do)
                log.debug("closing the renewer's store failed", exc_info=True)
