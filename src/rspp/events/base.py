"""The event base type, lanes, and the registry of kinds.

Every message that crosses a node, a transport or a process boundary is an
:class:`Event`. The header (``session``, ``turn``, ``seq``, ``origin_ns``) is the
same for every kind; the kind is the msgspec tag, written on the wire as the
``kind`` field. These class-level facts about a kind drive the kernel and are
part of the ABI (``docs/abi.md``):

* ``lane`` -- :attr:`Lane.CONTROL` kinds are handled by the kernel at the moment
  they are emitted and are never queued behind data.
* ``fenced`` -- whether an interruption of turn *n* drops this kind's events of
  turns ``<= n``. The bot's output of a turn is fenced; what the user said
  (audio in, VAD, ASR) is a fact and is not.
* ``milestone`` -- the kernel timestamps the first event of this kind per turn
  for latency accounting.
* ``overload`` -- the default policy of a full node inbox for this kind
  (``block``, ``drop_oldest``, ``drop_newest`` or ``latest``).
* ``public`` -- for control kinds, whether sinks (the client) are told.
* ``client`` -- for control kinds, whether a transport may push it into a
  session (a client's "stop", a playback report).

Header fields left at zero on a freshly built event are stamped by the runtime
from the event that caused it, so node code never has to fill them in.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

__all__ = [
    "ABI_VERSION",
    "Event",
    "Lane",
    "UnknownEvent",
    "kind_of",
    "known_kinds",
    "register",
    "registry_version",
]

#: The ABI version: ``MAJOR.MINOR``. Minor versions only add kinds or optional
#: fields (older peers pass unknown kinds through and ignore unknown fields);
#: a major bump is a breaking change and peers refuse a different major.
ABI_VERSION = "1.3"

#: Header field names, in wire order.
HEADER_FIELDS = ("session", "turn", "seq", "origin_ns", "inc", "pos")
#: Header integers are unsigned and fit in 63 bits (any language's int64).
HEADER_INT_MAX = 2**63 - 1
HeaderInt = Annotated[int, msgspec.Meta(ge=0, le=HEADER_INT_MAX)]


class Lane(enum.IntEnum):
    """Which lane a kind travels on."""

    DATA = 0
    CONTROL = 1


class Event(msgspec.Struct, tag_field="kind", gc=False):
    """Base of every event kind.

    ``gc=False``: events hold only scalars, bytes and strings, so they never form
    reference cycles and need not be tracked by the cycle collector (a measurable
    saving per event on the hot path).
    """

    kind: ClassVar[str] = ""
    lane: ClassVar[Lane] = Lane.DATA
    fenced: ClassVar[bool] = True
    milestone: ClassVar[bool] = False
    overload: ClassVar[str] = "block"
    #: Control kinds only: whether sinks (the client) are sent it.
    public: ClassVar[bool] = True
    #: Control kinds only: whether a transport may push it into a session.
    client: ClassVar[bool] = False

    #: Session id; stamped by the runtime.
    session: str = ""
    #: Turn (epoch) number, from 1; 0 on a fresh event means "inherit from the cause".
    turn: HeaderInt = 0
    #: Per-session emission sequence number, from 1; 0 means "not yet emitted".
    seq: HeaderInt = 0
    #: Session time (ns) of the input that caused this event; 0 means "inherit".
    origin_ns: HeaderInt = 0
    #: Output only: the incarnation (session run) that sent it to a sink; 0 until sent.
    inc: HeaderInt = 0
    #: Output only: its output position, increasing in the order events were handed to
    #: the session's sinks; ``(inc, pos)`` orders output across incarnations. 0 until sent.
    pos: HeaderInt = 0


class UnknownEvent(Event, tag=False):
    """An event of a kind this process does not know, kept whole so it can pass through.

    ``fields`` holds every non-header field exactly as decoded; encoding writes
    them back, so a kind added by a newer peer crosses this process untouched.
    """

    kind: str = ""  # type: ignore[misc]  # instance field shadows the ClassVar on purpose
    fields: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The flat mapping this event is encoded as."""
        wire: dict[str, Any] = {
            "kind": self.kind,
            "session": self.session,
            "turn": self.turn,
            "seq": self.seq,
            "origin_ns": self.origin_ns,
            "inc": self.inc,
            "pos": self.pos,
        }
        wire.update(self.fields)
        return wire


_KINDS: dict[str, type[Event]] = {}
_version = 0

E = TypeVar("E", bound=type[Event])


def register(cls: E) -> E:
    """Class decorator: make ``cls`` a known kind (its msgspec tag is the kind name).

    Applications use it for their own kinds too; codecs pick up new kinds on
    their next call.
    """
    global _version
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{cls.__name__} needs a string tag, e.g. class X(Event, tag='app.x')")
    existing = _KINDS.get(tag)
    if existing is not None and existing is not cls:
        raise ValueError(f"kind {tag!r} is already registered by {existing.__qualname__}")
    cls.kind = tag
    _KINDS[tag] = cls
    _version += 1
    return cls


def kind_of(name: str) -> type[Event] | None:
    """The class registered for a kind name, or None."""
    return _KINDS.get(name)


def known_kinds() -> dict[str, type[Event]]:
    """A copy of the kind registry."""
    return dict(_KINDS)


def registry_version() -> int:
    """Changes whenever a kind is registered (codecs rebuild their decoders on change)."""
    return _version
