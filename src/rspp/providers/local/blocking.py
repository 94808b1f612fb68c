"""Running blocking model calls off the event loop.

Model inference (onnxruntime, CTranslate2, llama.cpp, Piper) releases the GIL
while it computes, so running it in threads lets other sessions' events flow
while one session's model works. One shared pool, sized to the machine, keeps
the number of threads bounded however many sessions run.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["run_blocking", "start_blocking"]

P = ParamSpec("P")
T = TypeVar("T")


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="rspp-model"
    )


def start_blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
    """Start ``fn(*args, **kwargs)`` in the model thread pool; a future of its result.

    A future, not a task: nothing is left running on the event loop if the
    caller is cancelled (the thread finishes its call; make it check a flag).
    """
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(_pool(), functools.partial(fn, *args, **kwargs))


async def run_blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in the model thread pool and await its result."""
    return await start_blocking(fn, *args, **kwargs)
