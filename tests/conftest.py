"""Shared fixtures: a migrated database per backend, settings, and a live server.

Database-backed tests take the `database_url` fixture, which runs them on SQLite and on
PostgreSQL. PostgreSQL comes from `IDP_TEST_DATABASE_URL` (a server URL; each test session
creates and drops its own database). Without it the PostgreSQL runs skip with a reason,
unless `IDP_TEST_REQUIRE_POSTGRES=1` (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from idp import migrations
from idp.app import Services, build_services, create_app
from idp.db import make_engine
from idp.models import Base
from idp.settings import Settings

PG_ENV = "IDP_TEST_DATABASE_URL"
REQUIRE_PG_ENV = "IDP_TEST_REQUIRE_POSTGRES"


def _postgres_server_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{PG_ENV} is not set but {REQUIRE_PG_ENV}=1 requires PostgreSQL")
        return None
    return url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session (dropped afterwards), or None."""
    server_url = _postgres_server_url()
    if server_url is None:
        yield None
        return
    name = f"idp_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"cannot create a PostgreSQL test database at {server_url}: {exc}")
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str | None
) -> Iterator[str]:
    """An empty, migrated database on each backend; PostgreSQL tables are emptied after."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
        engine = make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url
        return
    if postgres_database is None:
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV}")
    engine = make_engine(postgres_database)
    migrations.upgrade(engine)
    try:
        yield postgres_database
    finally:
        with engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
        engine.dispose()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: development defaults, the given database, and overrides."""
    return Settings(database_url=database_url, **overrides)


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Development settings pointed at the test database."""
    return make_settings(database_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Services (engine, sessions, crypto) for the test database."""
    built = build_services(settings)
    yield built
    built.engine.dispose()


@pytest.fixture
def engine(services: Services) -> Engine:
    """The test database's engine."""
    return services.engine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The provider served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(services=services),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.02)
        raise RuntimeError("live server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start_live_server(database_url: str, **overrides: Any) -> LiveServer:
    """Start a live server whose issuer is its own loopback URL."""
    port = free_port()
    settings = make_settings(database_url, issuer=f"http://127.0.0.1:{port}", **overrides)
    server = LiveServer(build_services(settings))
    server.port, server.url = port, settings.issuer
    server._server.config.port = port
    server.start()
    return server


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    """The provider on real HTTP over loopback, on the test database."""
    server = start_live_server(database_url)
    yield server
    server.stop()
    server.services.engine.dispose()
