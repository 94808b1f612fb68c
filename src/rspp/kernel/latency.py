"""Per-turn latency accounting, from the events' timestamps.

The kernel tells the tracker when the first event of each milestone kind of a
turn was emitted and when it was handed to the node that consumes it. From
those marks a turn's breakdown follows (all in the session clock, except the
kernel's own share, which is measured with ``perf_counter_ns`` so that it is
real CPU time even under a virtual clock):

============  ===============================================================
vad_ms        ``vad.speech_end`` emitted - speech ended (its ``origin_ns``)
asr_ms        ``asr.final`` emitted - speech ended
llm_ttft_ms   first ``llm.delta`` emitted - ``turn.commit`` received by the LLM
tts_ttfa_ms   first ``tts.audio`` emitted - first ``llm.delta`` received by the TTS
output_ms     first ``audio.out`` sent - first ``tts.audio`` received by the output
kernel_us     sum over the critical hops (commit, first delta, first audio) of
              received - emitted: queueing and dispatch inside the runtime
v2v_ms        first ``audio.out`` sent to the client - speech ended
============  ===============================================================

``vad.speech_end`` and ``asr.final`` keep their *last* value before the commit
(a user may pause mid-turn); every other mark keeps its first value.
"""

from __future__ import annotations

import msgspec

__all__ = ["LatencyTracker", "TurnLatency"]

_LAST_BEFORE_COMMIT = frozenset({"vad.speech_end", "asr.final"})
_CRITICAL_HOPS = ("turn.commit", "llm.delta", "tts.audio")


class TurnLatency(msgspec.Struct, kw_only=True):
    """One turn's latency breakdown. None where the turn had no such stage."""

    turn: int
    vad_ms: float | None = None
    asr_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfa_ms: float | None = None
    output_ms: float | None = None
    kernel_us: float | None = None
    v2v_ms: float | None = None
    interrupted: bool = False
    delivered_ms: float = 0.0

    def values(self) -> dict[str, float]:
        """The measured values as a flat mapping (for a ``metrics`` event)."""
        out = {
            name: float(getattr(self, name))
            for name in self.__struct_fields__
            if name != "turn" and getattr(self, name) is not None
        }
        return out


class _Marks:
    __slots__ = ("committed", "emitted", "emitted_perf", "received", "received_perf", "speech_end")

    def __init__(self) -> None:
        self.emitted: dict[str, int] = {}
        self.emitted_perf: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.received_perf: dict[str, int] = {}
        self.speech_end: int | None = None
        self.committed = False


def _ms(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None else (a - b) / 1e6


class LatencyTracker:
    """Collects marks per turn and turns them into :class:`TurnLatency` records."""

    __slots__ = ("_turns",)

    def __init__(self) -> None:
        self._turns: dict[int, _Marks] = {}

    def _marks(self, turn: int) -> _Marks:
        marks = self._turns.get(turn)
        if marks is None:
            marks = self._turns[turn] = _Marks()
        return marks

    def emitted(self, kind: str, turn: int, now_ns: int, origin_ns: int, perf_ns: int) -> None:
        """A milestone event was emitted (or, for ``audio.out``, sent to the client)."""
        marks = self._marks(turn)
        if kind in _LAST_BEFORE_COMMIT:
            if marks.committed:
                return
            if kind == "vad.speech_end":
                marks.speech_end = origin_ns
        elif kind in marks.emitted:
            return
        elif kind == "turn.commit":
            marks.committed = True
        marks.emitted[kind] = now_ns
        marks.emitted_perf[kind] = perf_ns

    def received(self, kind: str, turn: int, now_ns: int, perf_ns: int) -> None:
        """A milestone event was handed to the node that consumes it."""
        marks = self._marks(turn)
        if kind not in marks.received:
            marks.received[kind] = now_ns
            marks.received_perf[kind] = perf_ns

    def finish(
        self, turn: int, *, interrupted: bool = False, delivered_ms: float = 0.0
    ) -> TurnLatency:
        """The breakdown of ``turn``; forgets its marks."""
        m = self._turns.pop(turn, None) or _Marks()
        e, r = m.emitted, m.received
        hops = [
            m.received_perf[k] - m.emitted_perf[k]
            for k in _CRITICAL_HOPS
            if k in m.received_perf and k in m.emitted_perf
        ]
        return TurnLatency(
            turn=turn,
            vad_ms=_ms(e.get("vad.speech_end"), m.speech_end),
            asr_ms=_ms(e.get("asr.final"), m.speech_end),
            llm_ttft_ms=_ms(e.get("llm.delta"), r.get("turn.commit")),
            tts_ttfa_ms=_ms(e.get("tts.audio"), r.get("llm.delta")),
            output_ms=_ms(e.get("audio.out"), r.get("tts.audio")),
            kernel_us=sum(hops) / 1e3 if hops else None,
            v2v_ms=_ms(e.get("audio.out"), m.speech_end),
            interrupted=interrupted,
            delivered_ms=delivered_ms,
        )

    def forget_before(self, turn: int) -> None:
        """Drop marks of turns older than ``turn`` that never finished (bounded memory)."""
        for old in [t for t in self._turns if t < turn]:
            del self._turns[old]
