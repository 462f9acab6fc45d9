"""Settings and database access for commands, with the checks that give clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from idp import migrations
from idp.cli.errors import EXIT_DATABASE, CliError
from idp.db import make_engine, make_session_factory, transaction
from idp.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

NOT_MIGRATED = "database is not migrated: run `idp migrate`"


def load_settings() -> Settings:
    """Settings from the environment; a ValidationError reaches the CLI's error boundary."""
    return Settings()


def safe_url(database_url: str) -> str:
    """The database URL with any password masked, fit to print."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we can find: show none of it
        return "<unparsable IDP_DATABASE_URL>"


def connect(settings: Settings) -> Engine:
    """An engine that has proved it can reach the database."""
    try:
        engine = make_engine(settings.database_url)
    except Exception as exc:  # bad URL, unknown driver
        raise CliError(
            f"cannot use IDP_DATABASE_URL {safe_url(settings.database_url)}: {exc}",
            status=EXIT_DATABASE,
        ) from exc
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (DBAPIError, SQLAlchemyError) as exc:
        engine.dispose()
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CliError(
            f"cannot reach the database at {safe_url(settings.database_url)}: {detail}; "
            "start it or fix IDP_DATABASE_URL",
            status=EXIT_DATABASE,
        ) from exc
    return engine


def require_migrated(engine: Engine) -> None:
    """Refuse to work on a database that is not at the newest revision."""
    current = migrations.current_revision(engine)
    if current is None:
        raise CliError(NOT_MIGRATED, status=EXIT_DATABASE)
    if current != migrations.head_revision():
        raise CliError(
            f"database is at revision {current}, not the newest "
            f"{migrations.head_revision()}: run `idp migrate`",
            status=EXIT_DATABASE,
        )


@contextmanager
def database() -> Iterator[Session]:
    """A session on the configured, reachable and migrated database, in one transaction."""
    engine = connect(load_settings())
    try:
        require_migrated(engine)
        with transaction(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()
