"""A local LLM with llama.cpp: Gemma 3 270M (Q4_K_M), streamed token by token, cancellable.

Gemma 3 270M is a *base* model with no chat template -- a small demo model,
not an assistant you would ship. It is prompted with a documented few-shot
transcript (:func:`few_shot_prompt`) and stop sequences, so it continues the
conversation as the assistant and stops at the user's next line.

The model is loaded once per process (``Llama`` is not safe to use from two
threads at once, so generations are serialized by a lock); a generation runs
in the model thread pool and checks a cancel flag between tokens, so a
cancelled reply stops within one token and frees the model for the next.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rspp.providers.local.assets import gemma_gguf
from rspp.providers.local.blocking import load_once

__all__ = ["DEFAULT_EXAMPLES", "DEFAULT_SYSTEM", "STOP", "LlamaModel", "few_shot_prompt"]

DEFAULT_SYSTEM = (
    "A friendly voice assistant named Robin chats with a user. Robin answers each question "
    "helpfully in one or two short sentences, and says goodbye politely."
)
#: Example exchanges: they teach the base model the format, the length and the tone.
DEFAULT_EXAMPLES: list[tuple[str, str]] = [
    ("hello who is this", "Hi, I'm Robin, your voice assistant. What can I do for you?"),
    (
        "what's a good dessert to cook tonight",
        "You could make a simple apple crumble. It takes about forty minutes.",
    ),
    (
        "tell me about rome",
        "Rome is the capital of Italy. It is famous for the Colosseum, old churches and great "
        "food.",
    ),
    (
        "what is the weather like in madrid in summer",
        "Summers in Madrid are hot and dry, often above thirty degrees.",
    ),
    (
        "how far is the moon",
        "The moon is about three hundred and eighty four thousand kilometres away.",
    ),
    ("ok thanks bye", "You're welcome. Have a great day, goodbye!"),
]
#: Where a reply ends: the next speaker's line, or a blank line.
STOP = ["\nUser:", "\nAssistant:", "User:", "\n\n"]


def few_shot_prompt(
    history: Sequence[tuple[str, str]],
    user_text: str,
    *,
    system: str = DEFAULT_SYSTEM,
    examples: Sequence[tuple[str, str]] = DEFAULT_EXAMPLES,
) -> str:
    """The prompt: a system line, example exchanges, the history, the user's words.

    ``history`` is (role, text) with role "user" or "assistant". The prompt ends
    with ``Assistant:`` so the model writes the assistant's next line.
    """
    lines = [system, ""]
    for user, assistant in examples:
        lines += [f"User: {user}", f"Assistant: {assistant}"]
    for role, text in history:
        speaker = "User" if role == "user" else "Assistant"
        lines.append(f"{speaker}: {' '.join(text.split())}")
    lines.append(f"User: {' '.join(user_text.split())}")
    lines.append("Assistant:")
    return "\n".join(lines)


@load_once
def _load(path: Path, n_ctx: int, n_threads: int) -> tuple[Any, threading.Lock]:
    from llama_cpp import Llama

    model = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
    # Freed before the interpreter tears down the modules its destructor needs.
    atexit.register(model.close)
    return model, threading.Lock()


class LlamaModel:
    """A GGUF model through llama-cpp-python, shared by every session of the process."""

    def __init__(self, path: Path | None = None, *, n_ctx: int = 2048, n_threads: int = 2) -> None:
        self.path = Path(path) if path is not None else gemma_gguf()
        self._model, self._lock = _load(self.path, n_ctx, n_threads)

    def warm_up(self, prompt: str) -> None:
        """Evaluate ``prompt`` (blocking): a later prompt that starts the same way skips it."""
        with self._lock:
            self._model.create_completion(prompt, max_tokens=1, temperature=0.0)

    def generate(
        self,
        prompt: str,
        on_text: Callable[[str], None],
        cancel: threading.Event,
        *,
        max_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.9,
        stop: Sequence[str] = STOP,
        seed: int | None = None,
        empty_retries: int = 2,
    ) -> str:
        """Generate (blocking), calling ``on_text`` per token; stops early when ``cancel`` is set.

        A model this small sometimes ends its line at once; such an empty reply is
        sampled again (up to ``empty_retries`` times, the seed moved on) rather than
        leaving the user with silence. Returns the finish reason: "stop", "length"
        or "cancelled".
        """
        with self._lock:
            for attempt in range(empty_retries + 1):
                if cancel.is_set():
                    return "cancelled"
                pieces = self._model.create_completion(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    stop=list(stop),
                    stream=True,
                    seed=None if seed is None else seed + attempt,
                )
                reason, said = "stop", False
                try:
                    for piece in pieces:
                        if cancel.is_set():
                            return "cancelled"
                        choice = piece["choices"][0]
                        if choice["text"]:
                            said = said or bool(choice["text"].strip())
                            on_text(choice["text"])
                        reason = choice.get("finish_reason") or reason
                finally:
                    close = getattr(pieces, "close", None)
                    if close is not None:
                        close()  # ends the generation inside llama.cpp
                if said:
                    break
            return str(reason)
