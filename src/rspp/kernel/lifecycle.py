"""A session's tasks and its lifetime: structured concurrency with an owner of its own.

The model is trio's nursery, and the task that owns it. Every task of a
session -- a worker per queued node, a ``run()`` body per node that has one --
is started and supervised by the session's :class:`TaskOwner`, not by whoever
called :meth:`Session.start`. So:

* **Nothing escapes into the host.** A task that fails is contained; the
  host's task is never cancelled by a session's trouble.
* **A task that dies is never silent.** A worker that ends (a foreign
  ``CancelledError``, anything escaping it) or a ``run()`` body that raises
  is *restarted*, up to its node's ``restarts`` budget in the spec, or else
  the session *fails*: it closes itself with reason ``failed``, an ``error``
  event names the node and the cause, and :attr:`Session.failure` says why. A
  ``run()`` body that returns normally has simply finished.
* **Closing is idempotent and cannot be cut short.** ``close()`` does its
  synchronous part at once (everything fenced, ``session.end`` sent, no more
  input), then waits for the owner task, which cancels every task and waits
  for them. If the caller of ``close()`` is itself cancelled while waiting,
  the owner carries on regardless; a second ``close()`` waits for the same
  end.
* **A node that swallows cancellation cannot hold the session open.** The
  owner cancels again every 50 ms; tasks still running after
  ``close_timeout_s`` are *abandoned*: logged, counted
  (:attr:`SessionStats.abandoned`), reported with an ``error`` event, and left
  to finish on their own (the owner keeps a reference until they do).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from rspp.events import Error
from rspp.kernel.runner import CAUSE

if TYPE_CHECKING:
    from rspp.kernel.runner import NodeRunner
    from rspp.kernel.session import Session

__all__ = ["TaskOwner"]

log = logging.getLogger("rspp.session")

Body = Callable[[], Coroutine[Any, Any, None]]


class TaskOwner:
    """Starts, supervises, cancels and awaits the tasks of one session."""

    __slots__ = (
        "_context",
        "_loop",
        "_owner",
        "_stop",
        "abandoned",
        "close_timeout_s",
        "session",
        "stopping",
        "tasks",
    )

    def __init__(self, session: Session, close_timeout_s: float) -> None:
        self.session = session
        self.close_timeout_s = close_timeout_s
        self.tasks: list[asyncio.Task[None]] = []
        #: Tasks that outlived the close deadline (kept referenced until they end).
        self.abandoned: set[asyncio.Task[None]] = set()
        #: Set once the session started closing: task endings are expected from then on.
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Future[None] | None = None
        self._context: contextvars.Context | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the owner task (its children inherit the caller's context, minus any cause)."""
        self._loop = loop
        self._stop = loop.create_future()
        context = contextvars.copy_context()
        context.run(CAUSE.set, None)
        self._context = context
        self._owner = loop.create_task(
            self._main(), name=f"rspp:{self.session.id}:owner", context=context
        )

    def spawn(self, runner: NodeRunner, what: str, body: Body, restarts: int) -> asyncio.Task[None]:
        """Start a supervised task for ``runner``: ``what`` is ``worker`` or ``run``."""
        assert self._loop is not None
        task = self._loop.create_task(
            self._supervise(runner, what, body, restarts),
            name=f"rspp:{self.session.id}:{runner.name}:{what}",
            context=self._context.copy() if self._context is not None else None,
        )
        self.tasks.append(task)
        if what == "worker":
            runner.task = task

        def ended(task: asyncio.Task[None]) -> None:
            # Cancelled before its first step, the supervisor never ran: do its job here.
            if task.cancelled() and not self.stopping:
                self._died(runner, what, body, restarts, "cancelled before it started")

        task.add_done_callback(ended)
        return task

    def _died(self, runner: NodeRunner, what: str, body: Body, restarts: int, problem: str) -> None:
        self.session.task_died(runner, what, problem, restarting=restarts > 0)
        if restarts <= 0:
            self.session.fail(f"node {runner.name!r} {what} died: {problem!r}")
            return
        self.session.stats.restarts[runner.name] += 1
        self.spawn(runner, what, body, restarts - 1)

    def request_stop(self) -> None:
        """Ask the owner to end every task (the synchronous part of closing is done)."""
        self.stopping = True
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def wait(self) -> None:
        """Wait until every task has ended or been abandoned (safe to cancel)."""
        if self._owner is not None:
            await asyncio.shield(self._owner)

    @property
    def done(self) -> bool:
        return self._owner is None or self._owner.done()

    # -- the owner and the supervisor -------------------------------------------------

    async def _main(self) -> None:
        assert self._stop is not None
        try:
            await self._stop
        except asyncio.CancelledError:
            # The owner itself is being cancelled (the event loop is shutting down with the
            # session still open): close now, then let the cancellation through.
            self.session.begin_close("cancelled")
            await self._shutdown()
            raise
        await self._shutdown()

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_timeout_s
        pending = {t for t in self.tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            left = deadline - loop.time()
            if left <= 0:
                break
            # A node that swallows cancellation is cancelled again until it gives up.
            _, pending = await asyncio.wait(pending, timeout=min(0.05, left))
        for task in pending:
            self._abandon(task)
        self.session.finished()

    def _abandon(self, task: asyncio.Task[None]) -> None:
        session = self.session
        name = task.get_name()
        self.abandoned.add(task)
        task.add_done_callback(self.abandoned.discard)
        session.stats.abandoned.append(name)
        message = (
            f"task {name} ignored cancellation for {self.close_timeout_s:.1f} s after close: "
            "abandoned"
        )
        log.error("session %s: %s", session.id, message)
        session.publish(Error(source=name, code="TaskAbandoned", message=message))

    async def _supervise(self, runner: NodeRunner, what: str, body: Body, restarts: int) -> None:
        session = self.session
        task = asyncio.current_task()
        assert task is not None
        while True:
            problem: BaseException | str
            try:
                await body()
                if what == "run":
                    return  # a run() body may simply finish
                problem = "the worker returned"
            except asyncio.CancelledError:
                if self.stopping:
                    raise
                if task.cancelling():
                    task.uncancel()  # cancelled by someone other than the kernel
                problem = "cancelled by something other than the kernel"
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # an Exception, or a BaseException a node let out
                problem = exc
            if self.stopping:
                return
            session.task_died(runner, what, problem, restarting=restarts > 0)
            if restarts <= 0:
                session.fail(f"node {runner.name!r} {what} died: {problem!r}")
                return
            restarts -= 1
            session.stats.restarts[runner.name] += 1
