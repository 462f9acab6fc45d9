"""The hosted pages' worker threads: one plain executor per process.

Page routes are `async` and hop to a worker thread once, through `run`, for their
synchronous work (database, argon2, templates). anyio's `to_thread.run_sync` (what
Starlette's `run_in_threadpool` and synchronous routes use) cost about three times as much
CPU per hop as `loop.run_in_executor` on a `ThreadPoolExecutor` (bench/README.md), which
the protocol endpoints use too (`IdpAuthorizationServer.run`).

The executor has `idp.app.REQUEST_THREADS` threads (more would only queue on the database
pool and hold argon2's memory), is made on first use and shut down with the application
(`idp.app`'s lifespan); a later application in the same process makes a new one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _page_executor() -> ThreadPoolExecutor:
    executor = _executor
    if executor is None:
        executor = _start()
    return executor


def _start() -> ThreadPoolExecutor:
    global _executor
    from idp.app import REQUEST_THREADS

    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="pages")
        return _executor


async def run(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`func(*args, **kwargs)` in a page worker thread, with this task's context (e.g.
    log fields) copied along, as `run_in_threadpool` did."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    loop = asyncio.get_running_loop()
    try:
        future = loop.run_in_executor(_page_executor(), call)
    except RuntimeError:
        # Another application in this process shut the executor down as this one used it.
        future = loop.run_in_executor(_start(), call)
    return await future


def shutdown() -> None:
    """Let the worker threads end (at application shutdown); the next `run` starts anew."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=False)
