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
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, TypeVar

__all__ = ["load_once", "run_blocking", "start_blocking"]

P = ParamSpec("P")
T = TypeVar("T")


class load_once(Generic[T]):
    """``functools.cache`` for model loaders, safe when sessions start at the same time.

    A first call in progress makes concurrent callers with the same arguments
    wait for its result instead of loading the model a second time (or, for a
    file being assembled, writing it twice).
    """

    def __init__(self, load: Callable[..., T]) -> None:
        self._cached = functools.cache(load)
        self._lock = threading.Lock()
        functools.update_wrapper(self, load)

    def __call__(self, *args: Hashable) -> T:
        with self._lock:
            return self._cached(*args)

    def cache_info(self) -> Any:
        """As ``functools.cache``'s: ``misses`` counts the loads."""
        return self._cached.cache_info()


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
