"""Every router beyond health checks, in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from idp.web import discovery, pages, protocol


def all_routers(app: FastAPI) -> list[APIRouter]:
    """The protocol and hosted-page routers. Modules add themselves here as they land."""
    del app
    return [discovery.router, protocol.router, pages.router]
