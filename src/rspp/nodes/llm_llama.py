"""The local LLM node: Gemma 3 270M through llama.cpp, streamed and cancellable.

It answers reply roots (``turn.commit``, and ``turn.speculate`` when the
pipeline speculates) with ``llm.delta`` tokens and an ``llm.done``. The prompt
is the few-shot transcript of ``rspp.providers.local.llama`` built from the
session's conversation (what the user actually heard of earlier replies). The
generation runs in the model thread pool; tokens cross back to the event loop
one by one. When the runtime cancels the reply (a barge-in, a dropped
speculation), the cancel flag stops the generation within one token.

Moving a session: the State holds the reply in progress (its prompt and the
text generated so far). Handed that reply's root again after a restore, the
node continues it: the prompt with what was already said as the start of the
assistant's line, so the model writes on from there and nothing is repeated.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from rspp.events import Event, LlmDelta, LlmDone, TurnCommit, TurnSpeculate
from rspp.kernel.node import Node, NodeConfig
from rspp.providers.local.blocking import start_blocking
from rspp.providers.local.llama import DEFAULT_SYSTEM, LlamaModel, few_shot_prompt

__all__ = ["LlamaLlm", "LlamaLlmConfig", "LlamaReply"]

_END = object()


class LlamaLlmConfig(NodeConfig):
    #: A GGUF file; empty: the bundled Gemma 3 270M.
    model_path: str = ""
    system: str = DEFAULT_SYSTEM
    max_tokens: Annotated[int, Meta(ge=1, le=4096)] = 60
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.9
    n_ctx: Annotated[int, Meta(ge=256, le=131072)] = 2048
    n_threads: Annotated[int, Meta(ge=1, le=64)] = 2
    #: Fixed sampling seed (reproducible replies); None: random.
    seed: int | None = None
    #: How many earlier messages of the conversation go into the prompt. Two (the last
    #: exchange) by default: a model this small copies longer histories instead of answering.
    history_messages: Annotated[int, Meta(ge=0)] = 2


class LlamaReply(msgspec.Struct, kw_only=True):
    """The reply in progress: for which root, its prompt, what was generated, and the end."""

    seq: int
    turn: int
    prompt: str
    text: str = ""
    tokens: int = 0
    ended: bool = False


class LlamaState(msgspec.Struct, kw_only=True):
    reply: LlamaReply | None = None


class LlamaLlm(Node[LlamaLlmConfig]):
    """Gemma 3 270M (or any GGUF) via llama-cpp-python."""

    consumes: ClassVar[tuple[str, ...]] = ("turn.commit",)
    accepts: ClassVar[tuple[str, ...]] = ("turn.speculate",)
    produces: ClassVar[tuple[str, ...]] = ("llm.delta", "llm.done")
    Config = LlamaLlmConfig
    State = LlamaState
    resumable = True

    def __init__(self, config: LlamaLlmConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.model = self._model(config)
        self._reply: LlamaReply | None = None
        self._said: list[str] = []  # the reply's text so far (joined only when it moves)

    @staticmethod
    def _model(config: LlamaLlmConfig) -> LlamaModel:
        path = Path(config.model_path) if config.model_path else None
        return LlamaModel(path, n_ctx=config.n_ctx, n_threads=config.n_threads)

    @classmethod
    def preload(cls, config: LlamaLlmConfig) -> None:
        # Also evaluates the prompt's fixed head (system line and examples) once, so the
        # first reply of the process does not pay for it (llama.cpp reuses the prefix).
        cls._model(config).warm_up(few_shot_prompt([], "hello", system=config.system))

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        assert isinstance(event, (TurnCommit, TurnSpeculate))
        cfg = self.config
        reply = self._reply
        if reply is None or reply.seq != event.seq:
            keep = cfg.history_messages
            history = self.ctx.conversation.history(before=event.turn)[-keep:] if keep else []
            prompt = few_shot_prompt(
                [(m.role, m.text) for m in history], event.text, system=cfg.system
            )
            reply = self._reply = LlamaReply(seq=event.seq, turn=event.turn, prompt=prompt)
            self._said = []
        if reply.ended:
            return
        # After a move, what was already said starts the assistant's line: the model goes on.
        said = "".join(self._said)
        prompt = reply.prompt + (" " + said if said else "")
        budget = max(1, cfg.max_tokens - reply.tokens)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(tokens.put_nowait, text)

        job = start_blocking(
            self.model.generate,
            prompt,
            on_text,
            cancel,
            max_tokens=budget,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed,
        )
        # Runs after every token the thread queued (both cross via call_soon_threadsafe).
        job.add_done_callback(lambda _: tokens.put_nowait(_END))
        first = not said
        try:
            while (item := await tokens.get()) is not _END:
                text = str(item)
                if first:
                    text, first = text.lstrip(), False
                    if not text:
                        first = True
                        continue
                self._said.append(text)  # recorded before it leaves: a move never repeats it
                reply.tokens += 1
                yield LlmDelta(text=text)
            reason = await job
        finally:
            cancel.set()  # a cancelled reply stops within one token
            if not job.done():  # nobody awaits it any more: do not warn about its result
                job.add_done_callback(lambda j: j.cancelled() or j.exception())
        reply.ended = True
        yield LlmDone(finish_reason=reason)
        self._reply = None

    def snapshot(self) -> LlamaState:
        reply = self._reply
        if reply is not None and self.ctx.is_fenced(reply.turn):
            reply = None
        if reply is None:
            return LlamaState()
        return LlamaState(reply=msgspec.structs.replace(reply, text="".join(self._said)))

    def restore(self, state: LlamaState) -> None:
        self._reply = state.reply
        self._said = [state.reply.text] if state.reply is not None and state.reply.text else []
