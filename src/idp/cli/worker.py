"""The application factory `idp serve` gives uvicorn, run once in each serving process.

With one worker, uvicorn serves in the `idp serve` process itself and calls the factory
there. With several, the supervising process builds the application once
(`build_before_forking`) and uvicorn forks the workers from it: each starts with
everything imported and built, and only runs the application's lifespan (signing keys,
the protocol server), instead of starting a fresh interpreter that imports it all again
(uvicorn's own way, multiprocessing's spawn: most of a second a worker, against issue 5's
"ready within 1.5 s"). A forked worker serves its own copy of the application; the parent
holds no connection, thread or socket of it (the database pool connects on first use),
and the worker starts with the default signal handlers, as a spawned one would, not with
its supervisor's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from typing import TYPE_CHECKING

from idp.memory import pause_gc, resume_gc

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("idp")

#: The application the supervising process built for its forked workers.
_built: FastAPI | None = None


def create_app() -> FastAPI:
    """The application, built with the garbage collector paused (`idp.memory.pause_gc`);
    the application's lifespan resumes it once the signing keys are loaded. In a forked
    worker, the one its parent built."""
    if _built is not None:
        return _built
    pause_gc()
    import_fastapi_deferring_its_models()
    from idp.app import create_app

    return create_app()


def import_fastapi_deferring_its_models() -> None:
    """Import FastAPI with pydantic's `defer_build` for the models it defines.

    FastAPI defines the models of an OpenAPI document (about forty) as it is imported, and
    pydantic builds each one's validators and serializers at once: about 0.1 s of a
    serving process's start. This service serves no OpenAPI document (`idp.app.create_app`:
    `openapi_url=None`), so they are left to be built on first use, which never comes. Only
    models defined during this import are deferred; nothing changes where FastAPI is
    already imported."""
    import sys

    if "fastapi" in sys.modules:
        return
    import pydantic

    config = pydantic.BaseModel.model_config
    before = config.get("defer_build")
    config["defer_build"] = True
    try:
        import fastapi  # noqa: F401
    finally:
        if before is None:
            del config["defer_build"]
        else:
            config["defer_build"] = before


def build_before_forking() -> bool:
    """Build the application in this (supervising) process and have uvicorn fork its
    workers from it rather than spawn them. Returns False, changing nothing, where forking
    would not be safe: a platform without fork, or a process that already runs other
    threads (a fork copies only the calling thread, and any lock another thread holds
    would stay held in the child)."""
    global _built
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return False
    from uvicorn import _subprocess

    if not hasattr(_subprocess, "spawn"):  # a uvicorn that starts workers some other way
        return False
    _built = create_app()
    if threading.active_count() > 1:  # building started a thread: forking is not safe
        _built = None
        resume_gc()
        log.warning("workers are started afresh: building the application started a thread")
        return False
    # What the build made is frozen out of the collector's sight before the fork, so
    # that no worker's collections walk (and so copy) the pages all of them share.
    resume_gc()
    os.register_at_fork(after_in_child=_default_signal_handlers)
    # uvicorn makes each worker's process through this multiprocessing context.
    _subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]
    return True


def _default_signal_handlers() -> None:
    """In a forked worker, the signals uvicorn's supervisor catches go back to their
    defaults until the worker's server installs its own: with the supervisor's handler
    (which only queues the signal for its own loop), a SIGTERM sent while the worker
    starts would be lost, and the supervisor would wait for that worker for ever."""
    from uvicorn.supervisors.multiprocess import SIGNALS

    for sig in SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
