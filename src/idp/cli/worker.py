"""The application factory `idp serve` gives uvicorn, run once in each serving process.

Kept apart from the commands so that a worker imports none of the command line (Typer,
the admin services): a worker process starts from nothing, and what it imports before it
answers is its start-up time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from idp.memory import pause_gc

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app() -> FastAPI:
    """The application, built with the garbage collector paused (`idp.memory.pause_gc`);
    the application's lifespan resumes it once the signing keys are loaded."""
    pause_gc()
    from idp.app import create_app

    return create_app()
