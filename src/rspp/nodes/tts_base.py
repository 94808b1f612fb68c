"""What every TTS node does around the synthesis itself.

A TTS node receives the reply as a stream of ``llm.delta`` text and an
``llm.done``. :class:`ChunkedTts` cuts each reply's text with a
:class:`~rspp.nodes.chunker.TextChunker` (so synthesis starts on the first
sentence or clause, not on the whole reply), hands each piece to the
subclass's :meth:`ChunkedTts.synthesize`, forgets the text of fenced replies,
and closes each reply with ``tts.done``. :func:`audio_chunks` cuts synthesized
audio into ``tts.audio`` chunks with the piece's words spread over them, so
the kernel can tell which words the user heard.

Moving a session. The State holds each reply's text not yet released as a
piece, and the progress of the event being handled: the pieces it released,
which one is being synthesized and how many of its chunks went out. A restored
TTS is handed that event again and continues from the next chunk: the
subclass re-synthesizes the piece and skips the ``skip`` chunks already sent
(exact for a deterministic voice; to a chunk's precision for one that is not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import Event, LlmDelta, LlmDone, TtsAudio, TtsDone
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.chunker import ChunkMode, TextChunker
from rspp.nodes.text import spread_words

__all__ = ["ChunkedTts", "TtsConfig", "TtsState", "TtsWork", "audio_chunks"]


class TtsConfig(NodeConfig):
    """What every TTS node has."""

    #: How the reply's text is cut into pieces (``full``: wait for the whole reply).
    chunking: ChunkMode = "sentence"
    #: The shortest piece worth synthesizing on its own.
    min_chars: Annotated[int, Meta(ge=1)] = 1
    #: Release the first piece of a reply after this many words even without punctuation
    #: (0: never): less time to first audio, a little prosody on the first words.
    first_max_words: Annotated[int, Meta(ge=0)] = 0
    #: The rate of the audio produced (the session's output rate).
    sample_rate: Annotated[int, Meta(ge=1000, le=384_000)] = 16000
    #: Size of the ``tts.audio`` chunks.
    chunk_ms: Annotated[float, Meta(ge=1.0)] = 200.0


def audio_chunks(
    pcm: bytes, text: str, sample_rate: int, chunk_ms: float, skip: int = 0
) -> list[TtsAudio]:
    """Cut PCM16 mono audio into chunks, the words of ``text`` spread over them; drop ``skip``."""
    step = max(2, int(sample_rate * chunk_ms / 1000) * 2)
    count = max(1, -(-len(pcm) // step))
    return [
        TtsAudio(pcm=pcm[i * step : (i + 1) * step], sample_rate=sample_rate, text=words)
        for i, words in enumerate(spread_words(text, count))
        if i >= skip
    ]


class TtsWork(msgspec.Struct, kw_only=True):
    """Progress on the event being handled."""

    seq: int
    turn: int
    pieces: list[str]
    #: The piece being synthesized, and how many of its chunks were sent.
    piece: int = 0
    chunks: int = 0
    #: An ``llm.done``: ``tts.done`` is due after the pieces; ``ended``: it was sent.
    done: bool = False
    ended: bool = False


class TtsState(msgspec.Struct, kw_only=True):
    """What a TTS node moves with a session."""

    #: Per reply: text pushed but not yet released as a piece, and whether a piece was.
    pending: dict[int, str] = msgspec.field(default_factory=dict)
    started: list[int] = msgspec.field(default_factory=list)
    work: TtsWork | None = None


class ChunkedTts(Node[Any]):
    """Base of TTS nodes; subclasses implement :meth:`synthesize`."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    produces: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")
    State = TtsState
    resumable = True

    def __init__(self, config: TtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._chunkers: dict[int, TextChunker] = {}  # turn -> its text not yet synthesized
        self._work: TtsWork | None = None

    def _chunker(self, turn: int) -> TextChunker:
        chunker = self._chunkers.get(turn)
        if chunker is None:
            cfg = self.config
            chunker = self._chunkers[turn] = TextChunker(
                cfg.chunking, min_chars=cfg.min_chars, first_max_words=cfg.first_max_words
            )
        return chunker

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        work = self._work
        if work is None or work.seq != event.seq:
            work = self._work = self._begin(event)
        turn = work.turn
        while work.piece < len(work.pieces):
            async for chunk in self.synthesize(work.pieces[work.piece], turn, work.chunks):
                work.chunks += 1  # counted before it leaves: a snapshot never repeats it
                yield chunk
            work.piece += 1
            work.chunks = 0
        if work.done and not work.ended:
            work.ended = True
            yield TtsDone()
        self._work = None

    def _begin(self, event: Event) -> TtsWork:
        """Start on a new event: the pieces its text completes."""
        for turn in [t for t in self._chunkers if self.ctx.is_fenced(t)]:
            del self._chunkers[turn]
        turn = event.turn
        if isinstance(event, LlmDelta):
            pieces = self._chunker(turn).push(event.text)
            return TtsWork(seq=event.seq, turn=turn, pieces=pieces)
        pieces = []
        if isinstance(event, LlmDone):
            rest = self._chunker(turn).flush()
            del self._chunkers[turn]
            if rest.strip():
                pieces.append(rest)
        return TtsWork(seq=event.seq, turn=turn, pieces=pieces, done=isinstance(event, LlmDone))

    def synthesize(self, text: str, turn: int, skip: int = 0) -> AsyncIterator[TtsAudio]:
        """The audio of one piece of text (an async generator), without its first ``skip``
        chunks (those went out before the session moved)."""
        raise NotImplementedError

    def snapshot(self) -> TtsState:
        work = self._work
        if work is not None and self.ctx.is_fenced(work.turn):
            work = None  # a reply that is over: nothing to continue
        return TtsState(
            pending={k: c.pending for k, c in self._chunkers.items()},
            started=[k for k, c in self._chunkers.items() if c.started],
            work=None if work is None else msgspec.structs.replace(work, pieces=list(work.pieces)),
        )

    def restore(self, state: TtsState) -> None:
        self._chunkers.clear()
        for turn, text in state.pending.items():
            chunker = self._chunker(turn)
            chunker.resume(text, started=turn in state.started)
        self._work = state.work
