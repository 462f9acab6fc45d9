"""FastAPI dependency aliases shared by routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from idp.app import Services
from idp.settings import Settings


def get_services(request: Request) -> Services:
    """The process-wide services built by `create_app`."""
    services: Services = request.app.state.services
    return services


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return get_services(request).settings


def get_db(request: Request) -> Iterator[Session]:
    """A database session for one request, committed when the route returns normally."""
    with get_services(request).sessions() as session, session.begin():
        yield session


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]
