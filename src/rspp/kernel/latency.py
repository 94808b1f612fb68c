"""Per-turn latency accounting and speculation accounting, from the events' timestamps.

The kernel feeds the tracker the moments that matter: the user's speech end
and final transcript (*user marks*, for the user turn in progress), a reply's
root (``turn.commit``/``turn.speculate``), the end-of-turn decision (a commit,
or the confirmation of a speculation), and the first emission/receipt of each
milestone kind of a reply. From those a reply's breakdown follows (session
clock, except the kernel's own share: ``perf_counter_ns``, real CPU time even
under a virtual clock):

============  ===============================================================
vad_ms        ``vad.speech_end`` emitted - speech ended (its ``origin_ns``)
asr_ms        last ``asr.final`` emitted - speech ended
endpoint_ms   end-of-turn decision (commit or confirm) - speech ended
llm_ttft_ms   first ``llm.delta`` emitted - the root received by the LLM
tts_ttfa_ms   first ``tts.audio`` emitted - first ``llm.delta`` received by the TTS
output_ms     first ``audio.out`` sent - first ``tts.audio`` received by the output
kernel_us     sum over the critical hops (root, first delta, first audio) of
              received - emitted: queueing and dispatch inside the runtime
v2v_ms        first ``audio.out`` sent to the client - speech ended
saved_ms      speculative replies: how much earlier the first audio was ready
              than if generation had started at the decision:
              ``min(first tts.audio, decision) - root``
============  ===============================================================

The user marks are those of the last speech end and final before the
decision; a decision consumes them, so the next user turn starts clean.
"""

from __future__ import annotations

import msgspec

__all__ = ["LatencySnapshot", "LatencyTracker", "SpeculationStats", "TurnLatency"]

_ROOTS = frozenset({"turn.commit", "turn.speculate"})
_CRITICAL_HOPS = ("root", "llm.delta", "tts.audio")


class TurnLatency(msgspec.Struct, kw_only=True):
    """One reply's latency breakdown. None where the reply had no such stage."""

    turn: int
    vad_ms: float | None = None
    asr_ms: float | None = None
    endpoint_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfa_ms: float | None = None
    output_ms: float | None = None
    kernel_us: float | None = None
    v2v_ms: float | None = None
    speculative: bool = False
    saved_ms: float | None = None
    interrupted: bool = False
    delivered_ms: float = 0.0

    def values(self) -> dict[str, float]:
        """The measured values as a flat mapping (for a ``metrics`` event)."""
        return {
            name: float(getattr(self, name))
            for name in self.__struct_fields__
            if name != "turn" and getattr(self, name) is not None
        }


class _User:
    __slots__ = ("final", "speech_end", "speech_end_emit")

    def __init__(self) -> None:
        self.speech_end: int | None = None  # origin: when speech ended
        self.speech_end_emit: int | None = None  # when the VAD said so
        self.final: int | None = None  # when the last final was emitted


class _Reply:
    __slots__ = (
        "decided",
        "emitted",
        "emitted_perf",
        "received",
        "received_perf",
        "root",
        "speculative",
        "user",
    )

    def __init__(self, root: int, speculative: bool, user: _User) -> None:
        self.root = root
        self.speculative = speculative
        self.decided: int | None = None
        self.user = user
        self.emitted: dict[str, int] = {}
        self.emitted_perf: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.received_perf: dict[str, int] = {}


class UserMarks(msgspec.Struct, kw_only=True):
    """The user marks of a turn (session time, ns), in a snapshot."""

    speech_end: int | None = None
    speech_end_emit: int | None = None
    final: int | None = None


class ReplyMarks(msgspec.Struct, kw_only=True):
    """One tracked reply's marks (session time, ns), in a snapshot."""

    turn: int
    root: int
    speculative: bool
    decided: int | None
    user: UserMarks
    emitted: dict[str, int]
    received: dict[str, int]


class LatencySnapshot(msgspec.Struct, kw_only=True):
    """The tracker's marks, to move with a session. Real-time (perf counter) marks do not
    move: another process's counter means nothing here, so ``kernel_us`` of a moved reply
    counts only the hops after the move."""

    user: UserMarks = msgspec.field(default_factory=UserMarks)
    replies: list[ReplyMarks] = msgspec.field(default_factory=list)


def _ms(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None else (a - b) / 1e6


class LatencyTracker:
    """Collects marks per reply and turns them into :class:`TurnLatency` records."""

    __slots__ = ("_replies", "_user")

    def __init__(self) -> None:
        self._user = _User()
        self._replies: dict[int, _Reply] = {}

    def user_mark(self, kind: str, now_ns: int, origin_ns: int) -> None:
        """``vad.speech_end`` or ``asr.final`` of the user turn in progress."""
        if kind == "vad.speech_end":
            self._user.speech_end = origin_ns
            self._user.speech_end_emit = now_ns
        else:
            self._user.final = now_ns

    def root(self, turn: int, now_ns: int, perf_ns: int, *, speculative: bool) -> None:
        """A reply root was emitted. A commit is also the end-of-turn decision."""
        reply = _Reply(now_ns, speculative, self._user)
        reply.emitted["root"] = now_ns
        reply.emitted_perf["root"] = perf_ns
        self._replies[turn] = reply
        if not speculative:
            self.decided(turn, now_ns)

    def decided(self, turn: int, now_ns: int) -> None:
        """The end of the user's turn was decided for reply ``turn`` (commit or confirm)."""
        reply = self._replies.get(turn)
        if reply is not None:
            reply.decided = now_ns
            reply.user = self._user  # the latest marks: a final may have come after the root
        self._user = _User()

    def emitted(self, kind: str, turn: int, now_ns: int, perf_ns: int) -> None:
        """A milestone event of a reply was emitted (``audio.out``: sent to the client)."""
        reply = self._replies.get(turn)
        if reply is not None and kind not in reply.emitted:
            reply.emitted[kind] = now_ns
            reply.emitted_perf[kind] = perf_ns

    def received(self, kind: str, turn: int, now_ns: int, perf_ns: int) -> None:
        """A milestone event of a reply was handed to the node that consumes it."""
        reply = self._replies.get(turn)
        if reply is None:
            return
        key = "root" if kind in _ROOTS else kind
        if key not in reply.received:
            reply.received[key] = now_ns
            reply.received_perf[key] = perf_ns

    def started(self, turn: int) -> int | None:
        """When reply ``turn``'s root was emitted, if it is being tracked."""
        reply = self._replies.get(turn)
        return None if reply is None else reply.root

    def first_audio(self, turn: int) -> int | None:
        """When reply ``turn`` first emitted synthesized audio, if it did."""
        reply = self._replies.get(turn)
        return None if reply is None else reply.emitted.get("tts.audio")

    def finish(
        self, turn: int, *, interrupted: bool = False, delivered_ms: float = 0.0
    ) -> TurnLatency:
        """The breakdown of reply ``turn``; forgets it."""
        m = self._replies.pop(turn, None)
        if m is None:
            return TurnLatency(turn=turn, interrupted=interrupted, delivered_ms=delivered_ms)
        e, r, user = m.emitted, m.received, m.user
        hops = [
            m.received_perf[k] - m.emitted_perf[k]
            for k in _CRITICAL_HOPS
            if k in m.received_perf and k in m.emitted_perf
        ]
        saved = None
        if m.speculative and m.decided is not None:
            ready = e.get("tts.audio")
            saved = _ms(min(ready, m.decided) if ready is not None else m.decided, m.root)
        return TurnLatency(
            turn=turn,
            vad_ms=_ms(user.speech_end_emit, user.speech_end),
            asr_ms=_ms(user.final, user.speech_end),
            endpoint_ms=_ms(m.decided, user.speech_end),
            llm_ttft_ms=_ms(e.get("llm.delta"), r.get("root")),
            tts_ttfa_ms=_ms(e.get("tts.audio"), r.get("llm.delta")),
            output_ms=_ms(e.get("audio.out"), r.get("tts.audio")),
            kernel_us=sum(hops) / 1e3 if hops else None,
            v2v_ms=_ms(e.get("audio.out"), user.speech_end),
            speculative=m.speculative,
            saved_ms=saved,
            interrupted=interrupted,
            delivered_ms=delivered_ms,
        )

    def drop(self, turn: int) -> None:
        """Forget a reply that will never be finished (a dropped speculation)."""
        self._replies.pop(turn, None)

    # -- moving a session ---------------------------------------------------------------

    def snapshot(self) -> LatencySnapshot:
        return LatencySnapshot(
            user=_user_marks(self._user),
            replies=[
                ReplyMarks(
                    turn=turn,
                    root=r.root,
                    speculative=r.speculative,
                    decided=r.decided,
                    user=_user_marks(r.user),
                    emitted=dict(r.emitted),
                    received=dict(r.received),
                )
                for turn, r in self._replies.items()
            ],
        )

    def restore(self, snap: LatencySnapshot) -> None:
        self._user = _user_from(snap.user)
        self._replies = {}
        for marks in snap.replies:
            reply = _Reply(marks.root, marks.speculative, _user_from(marks.user))
            reply.decided = marks.decided
            reply.emitted = dict(marks.emitted)
            reply.received = dict(marks.received)
            self._replies[marks.turn] = reply


def _user_marks(user: _User) -> UserMarks:
    return UserMarks(
        speech_end=user.speech_end, speech_end_emit=user.speech_end_emit, final=user.final
    )


def _user_from(marks: UserMarks) -> _User:
    user = _User()
    user.speech_end, user.speech_end_emit, user.final = (
        marks.speech_end,
        marks.speech_end_emit,
        marks.final,
    )
    return user


class SpeculationStats(msgspec.Struct, kw_only=True):
    """What speculation did in a session: attempts, outcomes, waste and gain."""

    attempts: int = 0
    hits: int = 0
    #: Replaced or committed over because the transcript changed.
    misses: int = 0
    #: Dropped because the user kept talking (or the session ended).
    discarded: int = 0
    #: LLM deltas (about one token each) generated by speculations that were not used.
    wasted_llm_deltas: int = 0
    #: Seconds of audio synthesized by speculations that were not used.
    wasted_tts_s: float = 0.0
    #: Seconds the LLM spent on requests of speculations that were not used (prefill included).
    wasted_llm_s: float = 0.0
    #: Per hit, how much earlier the reply's first audio was ready (ms).
    saved_ms: list[float] = msgspec.field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        decided = self.hits + self.misses
        return self.hits / decided if decided else 0.0

    def ended(self, reason: str, deltas: int, tts_ns: int, llm_ns: int = 0) -> None:
        """A speculation was dropped for ``reason`` (turn.interrupted reasons)."""
        if reason in ("speculation_miss", "speculation_replaced"):
            self.misses += 1
        else:
            self.discarded += 1
        self.wasted_llm_deltas += deltas
        self.wasted_tts_s += tts_ns / 1e9
        self.wasted_llm_s += llm_ns / 1e9
