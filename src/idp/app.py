"""The ASGI application: `create_app(settings)` wires services, routers and middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from idp.crypto import Encryptor
from idp.db import make_engine, make_session_factory, read_only
from idp.settings import Settings

log = logging.getLogger("idp")

#: Worker threads that run the synchronous work of the hosted pages (sessions, argon2,
#: database) in each process (`idp.web.threads`; anyio's, for anything else, is capped
#: the same). More threads than the database pool has connections only queue on the
#: pool (and cost memory, an argon2 check holds 19 MiB); fewer leave the database idle.
REQUEST_THREADS = 8
#: Worker threads of the protocol endpoints (`IdpAuthorizationServer.run`): a plain
#: executor, whose hand-off costs a third of anyio's (bench/README.md).
PROTOCOL_THREADS = 12
#: Connections of the request pool: one per worker thread, plus a margin for the
#: occasional second session of a request (the keyring's re-check).
POOL_SIZE = REQUEST_THREADS + PROTOCOL_THREADS + 4


@dataclass
class Services:
    """Long-lived objects shared by every request, built once per process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    encryptor: Encryptor
    extras: dict[str, object] = field(default_factory=dict)


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    """Create the engine, session factory and crypto for `settings`."""
    engine = engine or make_engine(settings.database_url, pool_size=POOL_SIZE)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        read_sessions=make_session_factory(read_only(engine)),
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
        lifespan=_lifespan,
        # FastAPI's OpenTelemetry bridge asks for the global providers (reading os.environ)
        # on every request, about 7% of a token request's CPU, to find them unconfigured:
        # this service configures no OpenTelemetry, so it is off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.services = services
    _add_web_security_and_static(app, services.settings)
    _add_fast_documents(app, services)
    app.include_router(health.router)
    _include_optional_routers(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from idp.memory import limit_malloc_arenas, resume_gc

    limit_malloc_arenas()  # before the first request thread starts
    to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
    await run_in_threadpool(warm_up, app.state.services)
    resume_gc()  # paused by `idp serve` while this process started (idp.cli.worker)
    yield
    from idp.async_db import AsyncDatabase
    from idp.oauth.server import IdpAuthorizationServer

    server = app.state.services.extras.get("oauth_server")
    if isinstance(server, IdpAuthorizationServer):
        server.close()
    from idp.web import threads

    threads.shutdown()

    from idp.loop_reads import LoopReads

    loop_reads = app.state.services.extras.pop("loop_reads", None)
    if isinstance(loop_reads, LoopReads):
        loop_reads.close()
    from idp import loop_sqlite

    loop_sqlite.close_all(app.state.services)
    reads = app.state.services.extras.pop("async_db", None)
    if isinstance(reads, AsyncDatabase):
        await reads.close()


def warm_up(services: Services) -> None:
    """Make the signing keys on first start and load them, with the protocol server, before
    the first request. A database that is down or not migrated is left to `/readyz`."""
    from idp import migrations
    from idp.oauth.keyring import get_keyring
    from idp.oauth.server import get_oauth_server

    try:
        if not migrations.is_at_head(services.engine):
            log.warning("database is not migrated: run `idp migrate`")
            return
        get_keyring(services)
        get_oauth_server(services)
    except SQLAlchemyError as exc:
        log.warning("database unavailable at start-up: %s", exc.__class__.__name__)


def _add_web_security_and_static(app: FastAPI, settings: Settings) -> None:
    """Security headers on every response (idp.web.security) and `/static` files."""
    from idp.web import security, static_files

    security.install(app, hsts=settings.secure_cookies)
    static_files.mount(app)


def _add_fast_documents(app: FastAPI, services: Services) -> None:
    """Discovery, the JWKS (idp.web.fast_documents) and the token, introspection and
    revocation endpoints (idp.web.fast_protocol) answered in front of everything."""
    from idp.web import fast_documents, fast_protocol

    fast_protocol.install(app, services)
    fast_documents.install(app, services)


def _include_optional_routers(app: FastAPI) -> None:
    """Routers of the protocol and the hosted pages, registered by their own modules."""
    from idp.web import routers

    for router in routers.all_routers(app):
        app.include_router(router)
    from idp.web import exact_routes

    exact_routes.install(app)
