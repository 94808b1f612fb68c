"""What every TTS node does around the synthesis itself.

A TTS node receives the reply as a stream of ``llm.delta`` text and an
``llm.done``. :class:`ChunkedTts` cuts each reply's text with a
:class:`~rspp.nodes.chunker.TextChunker` (so synthesis starts on the first
sentence or clause, not on the whole reply), hands each piece to the
subclass's :meth:`ChunkedTts.synthesize`, forgets the text of fenced replies,
and closes each reply with ``tts.done``. :func:`audio_chunks` cuts synthesized
audio into ``tts.audio`` chunks with the piece's words spread over them, so
the kernel can tell which words the user heard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from rspp.events import Event, LlmDelta, LlmDone, TtsAudio, TtsDone
from rspp.kernel.node import Node, NodeConfig
from rspp.nodes.chunker import ChunkMode, TextChunker
from rspp.nodes.text import spread_words

__all__ = ["ChunkedTts", "TtsConfig", "audio_chunks"]


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


def audio_chunks(pcm: bytes, text: str, sample_rate: int, chunk_ms: float) -> list[TtsAudio]:
    """Cut PCM16 mono audio into chunks; the words of ``text`` spread evenly over them."""
    step = max(2, int(sample_rate * chunk_ms / 1000) * 2)
    count = max(1, -(-len(pcm) // step))
    return [
        TtsAudio(pcm=pcm[i * step : (i + 1) * step], sample_rate=sample_rate, text=words)
        for i, words in enumerate(spread_words(text, count))
    ]


class ChunkedTts(Node[Any]):
    """Base of TTS nodes; subclasses implement :meth:`synthesize`."""

    consumes: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    produces: ClassVar[tuple[str, ...]] = ("tts.audio", "tts.done")

    def __init__(self, config: TtsConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._chunkers: dict[int, TextChunker] = {}  # turn -> its text not yet synthesized

    def _chunker(self, turn: int) -> TextChunker:
        chunker = self._chunkers.get(turn)
        if chunker is None:
            cfg = self.config
            chunker = self._chunkers[turn] = TextChunker(
                cfg.chunking, min_chars=cfg.min_chars, first_max_words=cfg.first_max_words
            )
        return chunker

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        for turn in [t for t in self._chunkers if self.ctx.is_fenced(t)]:
            del self._chunkers[turn]
        turn = event.turn
        if isinstance(event, LlmDelta):
            for piece in self._chunker(turn).push(event.text):
                async for chunk in self.synthesize(piece, turn):
                    yield chunk
        elif isinstance(event, LlmDone):
            rest = self._chunker(turn).flush()
            del self._chunkers[turn]
            if rest.strip():
                async for chunk in self.synthesize(rest, turn):
                    yield chunk
            yield TtsDone()

    def synthesize(self, text: str, turn: int) -> AsyncIterator[TtsAudio]:
        """The audio of one piece of text (an async generator)."""
        raise NotImplementedError

    def snapshot(self) -> Any:
        return {"pending": {str(k): c.pending for k, c in self._chunkers.items()}}

    def restore(self, state: Any) -> None:
        for turn, text in state["pending"].items():
            self._chunker(int(turn)).push(text)
