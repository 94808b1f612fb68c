"""The output transport node: a playout buffer paced in real time.

Synthesized audio arrives in chunks faster than real time (10 s of reply can
be buffered here). The node cuts it into frames and releases one frame per
frame duration (``lead_ms`` ahead of real time, to cover the client's jitter
buffer) as ``audio.out``; the kernel hands each frame to the sink bound to this
node and records it as delivered. The pacing runs on one session timer (no task
of its own): a frame leaves from the timer's callback, or at once when audio
arrives with nothing playing. With a lead of 8 ms or more the timer is set on a
2 ms grid of session time (a frame leaves up to 2 ms after its moment, which the
lead covers): the frames of many calls in one server then share the event
loop's wake-ups, which were most of a server's CPU per call (``BENCHMARKS.md``).

Barge-in: on ``control.clear_buffer`` the buffered frames of the cleared turns
are dropped at once and the pacing restarts, so the next reply starts without
waiting out the old schedule. (Even a frame already taken off the buffer
cannot leak: the kernel drops ``audio.out`` of a fenced turn at emission.)
Speculation: frames of a reply the kernel holds back (a speculation not yet
confirmed) wait in the buffer, unplayed, until ``turn.confirm`` releases them
-- then they go out at once, with the pacing starting there. ``control.pause``
stops the playout where it is (an interruption the turn manager has not
decided yet) and ``control.resume`` continues from the same frame.

When the last frame of a turn that TTS declared done has finished playing
(its send time plus its duration, so a barge-in during the last frame still
counts), the node emits ``turn.done``. With ``lead_ms`` > 0 the client holds up
to that much audio not yet played: it counts as delivered unless the client
reports playback, and the client drops it on ``control.clear_buffer``.

A planned hand-over (:meth:`AudioOutput.play_ahead`) sends some of the
buffered audio ahead of its time, so that the client plays it while the next
owner restores: the move is not heard as a gap.

Moving a session: the State carries the unplayed frames (audio and the words
they voice), the end-of-reply markers, the pacing (when the next frame is
due, in session time) and whether the output is paused, so a restored session
plays on from the very frame it had reached.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import (
    AudioOut,
    ClearBuffer,
    Event,
    Pause,
    Resume,
    TtsAudio,
    TtsDone,
    TurnConfirm,
    TurnDone,
)
from rspp.kernel.node import Node, NodeConfig
from rspp.kernel.timers import Timer
from rspp.nodes.text import spread_words

__all__ = ["AudioOutput", "AudioOutputState"]

#: A frame this close to its time is sent now (loop time is a float: waiting for the
#: exact nanosecond could spin).
_SLACK_NS = 50_000
#: The grid of a paced output's wake-ups when it has a lead of at least four of them.
_GRID_NS = 2_000_000


class AudioOutputConfig(NodeConfig):
    #: Playout frame duration (at least 1 ms: one sample at the lowest ABI rate).
    frame_ms: Annotated[float, Meta(ge=1.0, le=1000.0)] = 20.0
    #: How far ahead of real time frames are released.
    lead_ms: Annotated[float, Meta(ge=0.0, le=10_000.0)] = 0.0
    #: Buffered audio beyond this is refused (logged): a bound on memory.
    max_buffer_ms: Annotated[float, Meta(gt=0.0)] = 120_000.0


class AudioOutputState(msgspec.Struct, kw_only=True):
    """What the output moves with a session."""

    buffer: list[AudioOut | TtsDone]
    next_ns: int
    paused: bool
    sent_ns: dict[int, int]
    #: Per turn, frames the client already has from a previous owner of the session (a
    #: cluster's takeover sets it): the first that many are sent at once, not paced --
    #: downstream drops them as repeats -- so the caller waits for none of them.
    delivered: dict[int, int] = msgspec.field(default_factory=dict)


class AudioOutput(Node[AudioOutputConfig]):
    """Buffers ``tts.audio``, releases ``audio.out`` frames in real time."""

    consumes: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")
    produces: ClassVar[tuple[str, ...]] = ("audio.out",)
    controls: ClassVar[tuple[str, ...]] = (
        "control.clear_buffer",
        "control.pause",
        "control.resume",
        "turn.confirm",
    )
    Config = AudioOutputConfig
    State = AudioOutputState

    def __init__(self, config: AudioOutputConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._buffer: deque[AudioOut | TtsDone] = deque()
        self._buffered_ns = 0
        self._next_ns = 0  # when the next frame is due (session clock)
        self._delivered: dict[int, int] = {}  # see AudioOutputState.delivered
        self._sent_ns: dict[int, int] = {}  # turn -> audio sent
        self._lead_ns = int(config.lead_ms * 1e6)
        self._ahead_ns = 0  # more lead, once: a hand-over's play_ahead
        # With a lead, a frame may leave a little after its time (the client's buffer
        # absorbs it): wake-ups on a 2 ms grid of session time coalesce across calls.
        self._grid_ns = _GRID_NS if self._lead_ns >= 4 * _GRID_NS else 0
        self._timer: Timer | None = None  # when the next frame is due
        self._playing = False
        self.paused = False

    @property
    def buffered_ms(self) -> float:
        """Audio waiting to be played."""
        return self._buffered_ns / 1e6

    # -- input ---------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, TtsDone):
            self._buffer.append(event)
        elif isinstance(event, TtsAudio):
            if self._buffered_ns + event.duration_ns > self.config.max_buffer_ms * 1e6:
                self.ctx.log.warning(
                    "output buffer full (%.0f ms): dropping %.0f ms of turn %d",
                    self.buffered_ms,
                    event.duration_ns / 1e6,
                    event.turn,
                )
                return
            self._enqueue_frames(event)
        timer = self._timer
        if timer is None or not timer.pending:  # else the next frame's timer plays on
            self._play()

    def _enqueue_frames(self, chunk: TtsAudio) -> None:
        bytes_per_frame = int(chunk.sample_rate * self.config.frame_ms / 1000) * 2 * chunk.channels
        pcm = chunk.pcm
        count = max(1, -(-len(pcm) // bytes_per_frame))
        texts = spread_words(chunk.text, count)
        for i in range(count):
            frame = AudioOut(
                pcm=pcm[i * bytes_per_frame : (i + 1) * bytes_per_frame],
                sample_rate=chunk.sample_rate,
                channels=chunk.channels,
                text=texts[i],
                turn=chunk.turn,
                origin_ns=chunk.origin_ns,
            )
            self._buffer.append(frame)
            self._buffered_ns += frame.duration_ns

    def on_control(self, event: Event) -> None:
        if isinstance(event, Pause):
            self.paused = True
            return
        if isinstance(event, (Resume, TurnConfirm)):
            if isinstance(event, Resume):
                self.paused = False
            self._next_ns = 0  # continue from here, not from the old schedule
            self._play_soon()
            return
        if isinstance(event, ClearBuffer):
            buffer = self._buffer
            if buffer and buffer[-1].turn <= event.turn:
                buffer.clear()  # the usual case: everything buffered is stale
                self._buffered_ns = 0
            else:
                kept = [item for item in buffer if item.turn > event.turn]
                buffer.clear()
                buffer.extend(kept)
                self._buffered_ns = sum(f.duration_ns for f in kept if isinstance(f, AudioOut))
            for turn in [t for t in self._sent_ns if t <= event.turn]:
                del self._sent_ns[turn]
            for turn in [t for t in self._delivered if t <= event.turn]:
                del self._delivered[turn]
            self._next_ns = 0
            self._play_soon()

    # -- playout -----------------------------------------------------------------------------

    def _play(self) -> None:
        """Send what is due now; arm a timer for what is due next.

        Driven by the session's timers, not a task: a frame goes out from the
        timer's callback (no task switch per frame), and the kernel's rule that
        a deadline at or before an input's instant fires first makes a frame due
        at the very instant of a barge-in play the same way in every run.
        """
        if self._playing:
            return  # re-entered (a sink that reacts to a frame): the loop below re-reads
        self._playing = True
        try:
            self._arm(self._send_due())
        finally:
            self._playing = False

    def play_ahead(self, ms: float) -> None:
        """Send up to ``ms`` more of the buffered audio at once, ahead of its time.

        For a hand-over: the client then plays on while the next owner restores. The
        pacing goes on after those frames; frames held, paused or of a fenced turn stay.
        Arms a timer due now: the session's :meth:`~rspp.kernel.timers.Timers.fire_due`
        (or the loop) sends them as this node.
        """
        if ms <= 0 or not self._buffer:
            return
        self._ahead_ns = int(ms * 1e6)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.ctx.call_at(self.ctx.now_ns(), self._play)

    def _send_due(self) -> int | None:
        """Send the frames (and ``turn.done``) due now; when the next is due (None: not yet)."""
        lead_ns = self._lead_ns + self._ahead_ns
        self._ahead_ns = 0
        buffer = self._buffer
        while True:
            if not buffer or self.paused or self.ctx.is_held(buffer[0].turn):
                return None  # played on by new audio, a release or a resume
            now = self.ctx.now_ns()
            item = buffer[0]
            if isinstance(item, TtsDone):
                if self._next_ns - now > _SLACK_NS:  # the last frame is still playing
                    return self._next_ns
                buffer.popleft()
                sent = self._sent_ns.pop(item.turn, 0)
                self.emit(TurnDone(turn=item.turn, delivered_ms=sent / 1e6), item)
                continue
            duration = item.duration_ns
            delivered = self._delivered
            if delivered and delivered.get(item.turn, 0) > 0:
                buffer.popleft()  # the client has it already: at once, no time taken
                self._buffered_ns -= duration
                self._sent_ns[item.turn] = self._sent_ns.get(item.turn, 0) + duration
                delivered[item.turn] -= 1
                if not delivered[item.turn]:
                    del delivered[item.turn]
                self.emit(item, item)
                continue
            due = max(self._next_ns, now)
            if due - lead_ns - now > _SLACK_NS:
                return due - lead_ns
            buffer.popleft()
            self._buffered_ns -= duration
            sent_ns = self._sent_ns
            sent_ns[item.turn] = sent_ns.get(item.turn, 0) + duration
            self._next_ns = due + duration
            self.emit(item, item)

    def _play_soon(self) -> None:
        """Play on once the control being dispatched is done (not from inside it).

        Inside it, frames would reach the sinks and observers before the control
        itself -- a client would get a reply's first frames and then the
        ``control.clear_buffer`` that makes it drop them.
        """
        if not self._buffer:  # nothing to play (a clear's usual case): new audio plays on
            self._arm(None)
            return
        self._arm(self.ctx.now_ns())

    def _arm(self, at_ns: int | None) -> None:
        grid = self._grid_ns
        if at_ns is not None and grid:
            at_ns = -(-at_ns // grid) * grid  # up to the grid: many calls' frames, one wake-up
        timer = self._timer
        if timer is not None:
            if at_ns is not None and timer.when_ns == at_ns and timer.pending:
                return
            timer.cancel()
            self._timer = None
        if at_ns is not None:
            self._timer = self.ctx.call_at(at_ns, self._play)

    # -- moving a session ----------------------------------------------------------------

    def snapshot(self) -> AudioOutputState:
        return AudioOutputState(
            buffer=list(self._buffer),
            next_ns=self._next_ns,
            paused=self.paused,
            sent_ns=dict(self._sent_ns),
            delivered=dict(self._delivered),
        )

    def restore(self, state: AudioOutputState) -> None:
        self._buffer = deque(state.buffer)
        self._buffered_ns = sum(f.duration_ns for f in state.buffer if isinstance(f, AudioOut))
        self._next_ns = state.next_ns
        self.paused = state.paused
        self._sent_ns = dict(state.sent_ns)
        self._delivered = dict(state.delivered)
        self._arm(self.ctx.now_ns())  # plays on once the session runs
