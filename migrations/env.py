"""Alembic environment: uses the connection handed over by `idp.migrations`, or
IDP_DATABASE_URL when run as `alembic upgrade head`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from idp.db import make_engine
from idp.models import Base
from idp.settings import Settings

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(Settings().database_url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
