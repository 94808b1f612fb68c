"""The executor of turn decisions: what the kernel does when a reply starts, is released or ends.

The turn machine (:mod:`rspp.kernel.turns`) decides; this carries a
:class:`~rspp.kernel.turns.Decision` out, in the cancellation-first order:

1. FENCE -- purge the fenced turns' events from every inbox and from the
   speculation gate (the turn machine already raised the fence, so from this
   instant the emission path drops them too);
2. CLEAR -- ``control.clear_buffer`` to the nodes that hold output buffers,
   and to the sinks unless what ended was a speculation nobody heard of;
3. CANCEL -- cancel every handler working on a fenced turn;
4. RECORD -- what the user heard of the reply (``turn.interrupted`` with
   ``delivered_ms`` and ``heard_text``), the conversation cut to it, the
   turn's latency record and the reply's outcome counted; for a dropped
   speculation, the speculation's waste.

RELEASE opens the gate of a confirmed speculation. A reply that played out
(PLAYED) is recorded the same way, whole. The executor also keeps the
speculation accounting of the reply it holds back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rspp.events import ClearBuffer, Metrics, TurnInterrupted
from rspp.kernel.turns import Action, Decision, Input

if TYPE_CHECKING:
    from rspp.kernel.session import Session

__all__ = ["TurnExecutor"]

_FENCE, _CLEAR, _CANCEL, _RECORD, _RELEASE, _ADVANCE = Action  # in the table's order


class TurnExecutor:
    """Carries out turn decisions for one session."""

    __slots__ = ("_held_deltas", "_held_tts_ns", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self._held_deltas = 0
        self._held_tts_ns = 0

    def held_output(self, turn: int, *, deltas: int = 0, audio_ns: int = 0) -> None:
        """Reply output was generated while speculating; counted if it is the speculation's."""
        if turn == self.session.turns.active:
            self._held_deltas += deltas
            self._held_tts_ns += audio_ns

    def execute(self, decision: Decision) -> None:
        """Carry out ``decision``, in the cancellation-first order."""
        session = self.session
        actions = decision.actions
        fence = session.turns.fence
        if _FENCE in actions:
            for runner in session.queued:
                for dropped in runner.inbox.purge(  # type: ignore[union-attr]
                    lambda ev: ev.__class__.fenced and ev.turn <= fence
                ):
                    session.count_drop(runner.name, dropped.kind, "fenced")
            if session.outbound.held:
                session.count_drop("gate", "held", "fenced", session.outbound.drop_fenced())
        if _CLEAR in actions:
            clear = ClearBuffer(turn=fence)
            session.emission.stamp(clear)
            session.emission.notify(clear, public=not decision.speculative)
        if _CANCEL in actions:
            for runner in session.queued:
                runner.cancel_if_fenced(fence)
        target = decision.target
        if target and (_RECORD in actions or decision.input is Input.PLAYED):
            if decision.speculative:
                self._speculation_dropped(decision)
            else:
                self._reply_ended(decision)
        if _RELEASE in actions:
            self._release(decision.committed)
        if _ADVANCE in actions:
            self._held_deltas = self._held_tts_ns = 0
        session.watchdog.follow()

    def _reply_ended(self, decision: Decision) -> None:
        session = self.session
        target = decision.target
        interrupted = decision.input is not Input.PLAYED
        heard = session.ledger.record(target)
        session.conversation.ended(target, heard.heard_text, interrupted=interrupted)
        session.stats.replies["played" if not interrupted else decision.reason] += 1
        if interrupted:
            record = TurnInterrupted(
                turn=target,
                reason=decision.reason,
                delivered_ms=heard.delivered_ms,
                heard_text=heard.heard_text,
            )
            session.emission.stamp(record)
            session.emission.notify(record)
        lat = session.latency.finish(
            target, interrupted=interrupted, delivered_ms=heard.delivered_ms
        )
        session.turn_latencies.append(lat)
        if lat.saved_ms is not None:
            session.speculation.saved_ms.append(lat.saved_ms)
        session.publish(Metrics(turn=target, name="turn.latency", values=lat.values()))

    def _speculation_dropped(self, decision: Decision) -> None:
        session = self.session
        target = decision.target
        began = session.latency.started(target)
        llm_ns = 0 if began is None else session.clock.now_ns() - began
        session.speculation.ended(decision.reason, self._held_deltas, self._held_tts_ns, llm_ns)
        session.conversation.drop(target)
        session.latency.drop(target)
        record = TurnInterrupted(turn=target, reason=decision.reason)
        session.emission.stamp(record)
        session.emission.notify(record, public=False)

    def _release(self, turn: int) -> None:
        """A speculation was confirmed: it is the reply now; what it held goes out at once."""
        session = self.session
        session.speculation.hits += 1
        session.conversation.confirm(turn)
        session.latency.decided(turn, session.clock.now_ns())
        session.outbound.release()
