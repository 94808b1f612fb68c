"""The turn manager node: the asyncio shell around :class:`rspp.dialog.TurnManager`.

It feeds the pure turn manager what the VAD and the ASR say, keeps its one
timer, and emits what it decides: ``turn.commit`` / ``turn.speculate`` (reply
roots, numbered by the kernel), ``turn.confirm``, ``control.cancel`` of a
speculation, ``control.interrupt``, and ``control.pause``/``control.resume``
of the output while a barge-in is undecided. It learns when replies end from
the kernel's ``turn.done`` and ``turn.interrupted``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rspp.dialog import manager as m
from rspp.dialog.policy import TurnPolicy
from rspp.dialog.predictor import load_predictor
from rspp.events import (
    AsrFinal,
    AsrPartial,
    Cancel,
    Event,
    Interrupt,
    Pause,
    Resume,
    TurnCommit,
    TurnConfirm,
    TurnSpeculate,
    UserText,
    VadSpeechEnd,
    VadSpeechStart,
)
from rspp.kernel.node import Node
from rspp.kernel.timers import Timer

__all__ = ["TurnManagerConfig", "TurnManagerNode"]


class TurnManagerConfig(TurnPolicy, kw_only=True):
    """The turn policy, plus the end-of-turn predictor: None, "heuristic", or "module:callable"."""

    predictor: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        try:  # a predictor that cannot be loaded is a build error, not a failure at call time
            load_predictor(self.predictor)
        except (ImportError, AttributeError, TypeError) as exc:
            raise ValueError(f"predictor {self.predictor!r} cannot be loaded: {exc}") from exc


class TurnManagerNode(Node[TurnManagerConfig]):
    """Decides the ends of user turns, barge-ins and speculation (see ``rspp.dialog.manager``)."""

    consumes: ClassVar[tuple[str, ...]] = ("vad.speech_start", "vad.speech_end", "asr.final")
    #: Partials are optional: a non-streaming ASR (Whisper) gives finals only.
    accepts: ClassVar[tuple[str, ...]] = ("asr.partial", "user.text")
    produces: ClassVar[tuple[str, ...]] = ("turn.commit", "turn.speculate")
    controls: ClassVar[tuple[str, ...]] = ("turn.done", "turn.interrupted")
    Config = TurnManagerConfig
    State = m.ManagerSnapshot

    def __init__(self, config: TurnManagerConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.manager = m.TurnManager(config, load_predictor(config.predictor))
        self._timer: Timer | None = None
        self._timer_at: int | None = None

    def on_event(self, event: Event) -> None:
        manager = self.manager
        now = self.ctx.now_ns()
        if isinstance(event, AsrPartial):
            effects = manager.partial(now, event.text, event.stable)
        elif isinstance(event, AsrFinal):
            effects = manager.final(now, event.text)
        elif isinstance(event, UserText):
            effects = manager.text(now, event.text)
        elif isinstance(event, VadSpeechStart):
            effects = manager.speech_start(event.origin_ns)
        elif isinstance(event, VadSpeechEnd):
            effects = manager.speech_end(now, event.origin_ns)
        else:
            return
        self._run(effects, event)

    def on_control(self, event: Event) -> None:
        self._run(self.manager.reply_ended(event.turn), event)

    def _run(self, effects: list[m.Effect], cause: Event | None) -> None:
        manager = self.manager
        for effect in effects:
            if isinstance(effect, m.Commit):
                root = TurnCommit(text=effect.text)
                self.emit(root, cause)
                manager.reply_started(root.turn, speculative=False)
            elif isinstance(effect, m.Speculate):
                spec = TurnSpeculate(text=effect.text)
                self.emit(spec, cause)
                if self.ctx.is_held(spec.turn):  # the kernel took it
                    manager.reply_started(spec.turn, speculative=True)
            elif isinstance(effect, m.Confirm):
                self.emit(TurnConfirm(turn=effect.turn), cause)
            elif isinstance(effect, m.Discard):
                self.emit(Cancel(turn=effect.turn, reason="user_continued"), cause)
            elif isinstance(effect, m.Interrupt):
                self.emit(Interrupt(reason="barge_in"), cause)
            elif isinstance(effect, m.PauseOutput):
                self.emit(Pause(reason="undecided_interruption"), cause)
            elif isinstance(effect, m.ResumeOutput):
                self.emit(Resume(reason=effect.reason), cause)
        self._arm()

    def _arm(self) -> None:
        deadline = self.manager.deadline
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.ctx.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._run(self.manager.timeout(self.ctx.now_ns()), None)

    def snapshot(self) -> m.ManagerSnapshot:
        return self.manager.snapshot()

    def restore(self, state: m.ManagerSnapshot) -> None:
        self.manager.restore(state)
        self._arm()  # its deadline is in session time, which carried across the move
