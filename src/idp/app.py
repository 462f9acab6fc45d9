"""The ASGI application: `create_app(settings)` wires services, routers and middleware."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.crypto import Encryptor
from idp.db import make_engine, make_session_factory
from idp.settings import Settings


@dataclass
class Services:
    """Long-lived objects shared by every request, built once per process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    encryptor: Encryptor
    extras: dict[str, object] = field(default_factory=dict)


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    """Create the engine, session factory and crypto for `settings`."""
    engine = engine or make_engine(settings.database_url)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        encryptor=Encryptor(settings.encryption_keyring),
    )


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """Build the FastAPI application for `settings` (read from the environment if omitted)."""
    from idp.web import health

    services = services or build_services(settings or Settings())
    app = FastAPI(
        title="Identity provider",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    _add_web_security_and_static(app, services.settings)
    app.include_router(health.router)
    _include_optional_routers(app)
    return app


def _add_web_security_and_static(app: FastAPI, settings: Settings) -> None:
    """Security headers on every response (idp.web.security) and `/static` files."""
    from idp.web import security, static_files

    security.install(app, hsts=settings.secure_cookies)
    static_files.mount(app)


def _include_optional_routers(app: FastAPI) -> None:
    """Routers of the protocol and the hosted pages, registered by their own modules."""
    from idp.web import routers

    for router in routers.all_routers(app):
        app.include_router(router)
