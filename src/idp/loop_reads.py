"""Core SELECTs read on the event loop, with the row a session would have read.

A hosted page's GET only reads (its login transaction, its client, whether the account
has an authenticator), and the hop to a worker thread, a session's begin and end and the
ORM's loading cost several times the statement (bench/README.md). So such reads run on
the event loop: on PostgreSQL over `idp.async_db` (`fetch_row`: autocommit, the latest
committed data, as a read-only session reads), on SQLite over a
`idp.loop_sqlite.LoopReader` (which never waits for a lock).

A `LoopQuery` is compiled once for the engine's dialect (on PostgreSQL with libpq's own
`$1` parameters), and applies the result processing SQLAlchemy's types would (UTC
datetimes, JSON and booleans on SQLite), so what it returns is what a session returns.
A read that cannot be made at once raises `NotReadAtOnce`: the SQLite file is held by
another connection, the database is an in-memory one (which exists only on its own
connections), or the driver failed. The caller then takes its threaded path, which waits
its turn or says what went wrong.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Select

from idp.async_db import async_db
from idp.db import libpq_dialect
from idp.loop_sqlite import LoopReader

if TYPE_CHECKING:
    from idp.app import Services


class NotReadAtOnce(Exception):  # noqa: N818 (an outcome, not an error of the caller's)
    """The read could not be made on the event loop; take the threaded path."""


class LoopQuery:
    """A SELECT compiled once for one engine's dialect: its SQL in the driver's
    parameter style and the result processing of each column's type."""

    def __init__(self, statement: Select[Any], engine: Engine) -> None:
        dialect = engine.dialect
        if dialect.name == "postgresql":
            dialect = libpq_dialect()  # result processing as psycopg's, `$1` parameters
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        #: Positional on both: SQLite's qmark, libpq's numbered parameters.
        self._names: Sequence[str] | None = compiled.positiontup
        for name, bind in compiled.binds.items():
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name!r} needs bind processing; not supported")
        self._processors: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """`values` (by parameter name) in the form the driver takes."""
        if self._names is None:
            return dict(values)
        return [values[name] for name in self._names]

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        """A driver row as a session would have returned it."""
        return tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(self._processors, raw, strict=True)
        )


class LoopReads:
    """Reads on the event loop for one process's engine (`loop_reads(services)`)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        engine = services.engine
        self.postgresql = engine.dialect.name == "postgresql"
        self._sqlite = None if self.postgresql else LoopReader.for_engine(engine)
        #: The driver's errors (psycopg is imported on PostgreSQL only).
        self._driver_error: type[Exception] = sqlite3.Error
        if self.postgresql:
            import psycopg

            self._driver_error = psycopg.Error
        #: Each statement's `LoopQuery`, by the statement's identity (statements given
        #: here are built once, at import, and kept with their query).
        self._queries: dict[int, tuple[Select[Any], LoopQuery]] = {}

    def query(self, statement: Select[Any]) -> LoopQuery:
        """`statement` compiled for this engine, once."""
        kept = self._queries.get(id(statement))
        if kept is None or kept[0] is not statement:
            kept = self._queries[id(statement)] = (
                statement,
                LoopQuery(statement, self._services.engine),
            )
        return kept[1]

    async def fetch_one(
        self, statement: Select[Any], values: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of `statement`, processed, or None; `NotReadAtOnce` when it
        cannot be read without waiting (or the driver failed)."""
        query = self.query(statement)
        parameters = query.parameters(values)
        if self.postgresql:
            raw = await self._fetch_postgresql(query.sql, parameters)
        else:
            raw = self._fetch_sqlite(query.sql, parameters)
        return None if raw is None else query.row(raw)

    async def _fetch_postgresql(
        self, sql: str, parameters: Sequence[Any] | dict[str, Any]
    ) -> Sequence[Any] | None:
        assert not isinstance(parameters, dict)
        try:
            row: Sequence[Any] | None = await async_db(self._services).fetch_row(sql, parameters)
        except self._driver_error as exc:
            raise NotReadAtOnce(exc.__class__.__name__) from exc
        return row

    def _fetch_sqlite(self, sql: str, parameters: Sequence[Any] | dict[str, Any]) -> Any:
        if self._sqlite is None:
            raise NotReadAtOnce("no reader for this database on the event loop")
        assert not isinstance(parameters, dict)
        try:
            return self._sqlite.fetch_one(sql, parameters)
        except sqlite3.Error as exc:
            raise NotReadAtOnce(exc.__class__.__name__) from exc

    def close(self) -> None:
        """Close the SQLite connection (PostgreSQL's belong to `idp.async_db`)."""
        if self._sqlite is not None:
            self._sqlite.close()


def loop_reads(services: Services) -> LoopReads:
    """The process's `LoopReads`, made on first use (on the event loop), closed with the
    application."""
    existing = services.extras.get("loop_reads")
    if isinstance(existing, LoopReads):
        return existing
    reads = LoopReads(services)
    services.extras["loop_reads"] = reads
    return reads
