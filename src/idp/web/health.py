"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from idp import migrations
from idp.db import read_only
from idp.web.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> JSONResponse:
    """The process is alive."""
    # A response rather than a dict: no response model for FastAPI to build (and no
    # import of pydantic.v1 to check it against: about 30 ms of start-up).
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """The database is reachable and migrated to the newest revision."""
    try:
        ready = migrations.is_at_head(read_only(services.engine))
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "reason": "database unreachable"}, 503)
    if not ready:
        return JSONResponse({"status": "unavailable", "reason": "database not migrated"}, 503)
    return JSONResponse({"status": "ok"})
