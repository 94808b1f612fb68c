"""The node contract.

A node is plain Python with a small contract. It declares the kinds it
``consumes`` and ``produces`` (checked when the pipeline is built), and handles
events in exactly one of two ways:

``on_event(ev)`` -- synchronous. Emits with ``self.emit(...)``. The runtime calls
    it *inline*, directly from the emitter, with no queue and no task switch:
    the cheapest possible hop, for work that takes microseconds (filters,
    routers, a VAD on one frame, an output buffer). A spec may still put it
    behind a queue (``queued = true``).

``async def stream(ev)`` -- an async generator, for generating work (an LLM, a
    TTS, anything that awaits a provider). Each yielded event is emitted. It
    always runs in its own task behind a bounded inbox, one event at a time.
    The runtime *pulls* it: if the turn of ``ev`` is interrupted, the runtime
    cancels the task (``CancelledError`` at the node's current ``await``, which
    closes its ``async with`` provider streams) and never pulls again. A node
    that ignores the cancellation can finish the item it was producing, and
    that item is dropped; it cannot produce another.

A node never handles an interruption itself for the invariant to hold: the
kernel fences the turn, clears outputs and cancels generation. Nodes that own
an output buffer declare ``controls = ("control.clear_buffer",)`` and drop it
in :meth:`Node.on_control`, which the kernel calls synchronously.

Optionally: ``async def run()`` is a long-lived body (a playout clock, a
connection) owned by the session and cancelled when it closes; ``close()``
releases resources once the session is over; and ``snapshot()``/``restore()``
move the node's state between processes.

What a node emits belongs to the reply of its *cause* (see
:mod:`rspp.kernel.runner`): the event it is handling, or the one it passes to
``emit``. Reply output (a fenced kind) emitted with no cause and no ``turn``
-- from ``run()``, or a thread that did not inherit the handler's context --
is dropped by the kernel and reported: name the cause.

Moving a session. Whatever a node keeps between events -- a buffer, a counter,
a deadline -- is its state, and only the node knows it has some:
``snapshot()`` returns it as an instance of the node's ``State`` type (a
msgspec Struct; the kernel refuses untyped state) and ``restore()`` gets one
back, validated, before any event is handled. State that is not in the
snapshot does not move (a text buffer left out is text the user never hears).
Deadlines in it are in session time, which carries across the move: re-arm
timers with ``ctx.call_at`` -- they then have no cause to inherit, so reply
output they emit must carry its ``turn``. A snapshot can be taken at any
instant, so a queued node may be in the middle of an event: after the restore
that event is handed to the node again, first. A ``resumable`` node keeps
in its State how far it got with it (count an item as done
*before* yielding it) and continues from there; the kernel assumes any other
node would start over, so when such a node was in the middle of a reply, the
restored session ends that reply where the user stopped hearing it
(``turn.interrupted``, reason ``moved``) rather than let it be heard twice.
Input events (not fenced) are handed again to every node: handling one twice
must be harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from rspp.events import Event

if TYPE_CHECKING:
    from rspp.kernel.conversation import Conversation
    from rspp.kernel.sinks import Sink
    from rspp.kernel.timers import Timer

__all__ = ["Node", "NodeConfig", "NodeContext"]


class NodeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of node config schemas: unknown keys are errors, so typos fail at build time."""


class NodeContext(Protocol):
    """What the runtime offers a node (implemented by the kernel's node runner)."""

    @property
    def name(self) -> str:
        """The node's name in the pipeline."""
        ...

    @property
    def session_id(self) -> str:
        """The id of the session this node instance belongs to."""
        ...

    @property
    def log(self) -> logging.Logger:
        """A logger named after the node."""
        ...

    def emit(self, event: Event, cause: Event | None = None) -> None:
        """Emit ``event``; header fields left at 0 are taken from ``cause``.

        ``cause`` defaults to the event the node is handling (in a timer callback:
        the event it was handling when it armed the timer). With no cause at all
        (``run()``), facts get the current turn and time, and reply output must
        set ``turn`` or it is dropped.
        """
        ...

    def call_later(
        self, delay_s: float, callback: Callable[..., object], *args: Any
    ) -> Timer | None:
        """Run ``callback(*args)`` after ``delay_s``; the session cancels it when it closes.

        The callback runs with the event being handled now as its cause. Returns
        a handle to cancel it earlier (None once the session has stopped).
        """
        ...

    def call_at(self, when_ns: int, callback: Callable[..., object], *args: Any) -> Timer | None:
        """Like :meth:`call_later`, at session time ``when_ns`` (for deadlines in a State)."""
        ...

    def now_ns(self) -> int:
        """Session time (the loop's clock, carried across moves; virtual under VirtualClock)."""
        ...

    def is_fenced(self, turn: int) -> bool:
        """Whether the output of ``turn`` has been fenced by an interruption or a cancel."""
        ...

    def is_held(self, turn: int) -> bool:
        """Whether ``turn`` is a speculation whose output must not reach the client yet."""
        ...

    @property
    def conversation(self) -> Conversation:
        """The session's conversation history, as the user heard it."""
        ...

    def resource(self, name: str) -> Any:
        """A named object provided to the session (a model handle, a client)."""
        ...

    def sink(self, name: str) -> Sink:
        """A named session sink."""
        ...


C = TypeVar("C", bound=NodeConfig)


class Node(Generic[C]):
    """Base class of every node type. See the module docstring for the contract."""

    #: Data kinds this node handles ("*" for every kind that reaches it); each must be
    #: produced upstream, or the pipeline does not build.
    consumes: ClassVar[tuple[str, ...]] = ()
    #: Data kinds this node also handles when a pipeline produces them (optional inputs,
    #: e.g. an LLM that can answer speculative roots); routed like ``consumes``.
    accepts: ClassVar[tuple[str, ...]] = ()
    #: Data kinds this node may emit ("*" for "whatever it receives").
    produces: ClassVar[tuple[str, ...]] = ()
    #: Control-lane kinds delivered synchronously to :meth:`on_control`.
    controls: ClassVar[tuple[str, ...]] = ()
    #: The config schema (a msgspec Struct); specs are validated against it.
    Config: ClassVar[type[NodeConfig]] = NodeConfig
    #: The type of what :meth:`snapshot` returns (a msgspec Struct); None: stateless.
    State: ClassVar[type[msgspec.Struct] | None] = None
    #: Whether the node can continue an event it was in the middle of when a snapshot
    #: was taken (its State says how far it got). See the module docstring.
    resumable: ClassVar[bool] = False

    # Set by __init_subclass__: how the runtime drives this type.
    streaming: ClassVar[bool] = False
    has_run: ClassVar[bool] = False

    def __init__(self, config: C, ctx: NodeContext) -> None:
        self.config = config
        self.ctx = ctx

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        defines_stream = cls.stream is not Node.stream
        defines_on_event = cls.on_event is not Node.on_event
        if defines_stream and defines_on_event:
            raise TypeError(f"{cls.__qualname__} defines both on_event and stream; pick one")
        cls.streaming = defines_stream
        cls.has_run = cls.run is not Node.run

    @classmethod
    def handles_events(cls) -> bool:
        """Whether the type implements a data handler at all."""
        return cls.streaming or cls.on_event is not Node.on_event

    # -- the handlers: a node implements one of these --------------------------------

    def on_event(self, event: Event) -> None:
        """Handle one event synchronously; emit with ``self.emit``."""
        raise NotImplementedError

    def stream(self, event: Event) -> AsyncIterator[Event]:
        """Handle one event by yielding what it produces (pulled and cancelled by the runtime).

        Implement it as an async generator (``async def stream(...)`` with ``yield``).
        """
        raise NotImplementedError

    # -- optional --------------------------------------------------------------------

    def on_control(self, event: Event) -> None:
        """A control-lane event of a kind listed in ``controls``. Must be quick and not block."""

    async def run(self) -> None:
        """A long-lived body owned by the session, cancelled at close (run only if overridden)."""
        await asyncio.sleep(0)  # pragma: no cover

    def close(self) -> None:
        """The session ended (every task of it is done): release what the node holds."""

    @classmethod
    def preload(cls, config: Any) -> None:
        """Load what every session of this type shares (a model) before the first session.

        Optional: constructing the node loads it anyway, but a host calls this
        (blocking: from a thread) to show progress and to keep the first call fast.
        """

    def snapshot(self) -> Any:
        """The node's state, an instance of :attr:`State`; None if there is nothing to move."""
        return None

    def restore(self, state: Any) -> None:
        """Take back what :meth:`snapshot` returned (validated; before any event is handled)."""

    # -- conveniences ----------------------------------------------------------------

    def emit(self, event: Event, cause: Event | None = None) -> None:
        """Shorthand for ``self.ctx.emit``."""
        self.ctx.emit(event, cause)
