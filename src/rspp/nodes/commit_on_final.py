"""The simplest end-of-turn policy: the user's turn ends with each final transcript.

A placeholder for the turn manager (silence window, end-of-turn predictor,
false-interruption handling), which replaces it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from rspp.events import AsrFinal, Event, TurnCommit
from rspp.kernel.node import Node, NodeConfig

__all__ = ["CommitOnFinal"]


class CommitOnFinalConfig(NodeConfig):
    #: Finals shorter than this (after stripping) do not end a turn (noise, empty results).
    min_chars: Annotated[int, Meta(ge=0)] = 1


class CommitOnFinal(Node[CommitOnFinalConfig]):
    """Emits ``turn.commit`` for every non-empty ``asr.final``."""

    consumes: ClassVar[tuple[str, ...]] = ("asr.final",)
    produces: ClassVar[tuple[str, ...]] = ("turn.commit",)
    Config = CommitOnFinalConfig

    def on_event(self, event: Event) -> None:
        assert isinstance(event, AsrFinal)
        text = event.text.strip()
        if len(text) >= self.config.min_chars:
            self.emit(TurnCommit(text=text))
