"""Database engine and sessions: SQLite (WAL, foreign keys) or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Dialect, Engine, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

if TYPE_CHECKING:
    # The ORM is imported when sessions are made: `idp serve`'s supervisor of several
    # workers only checks the schema, with Core.
    from sqlalchemy.orm import Session, sessionmaker

SQLITE_BEGIN_OPTION = "idp_sqlite_begin"
#: Server-side connections are recycled after this many seconds, so none outlives a
#: server's or proxy's idle timeout. Instead of `pool_pre_ping`, which costs a round trip
#: on every checkout (bench/README.md, profiles): a connection that dies otherwise
#: (database restart) fails one request and is then discarded by the pool.
POOL_RECYCLE_SECONDS = 1800


def make_engine(database_url: str, *, pool_size: int | None = None, **kwargs: Any) -> Engine:
    """Create an engine; for SQLite, make the folder and turn on WAL and foreign keys.

    `pool_size` is the number of connections kept open (the serving process passes its
    request threads, `idp.app.REQUEST_THREADS`, plus a margin): connections beyond the
    pool are opened and closed per use, which is what made a busy server slow.
    """
    url = make_url(database_url)
    if pool_size is not None:
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", max(2, pool_size // 4))
    if url.get_backend_name() == "sqlite":
        in_memory = not url.database or url.database == ":memory:"
        if in_memory:
            # One connection per thread (SQLAlchemy's SingletonThreadPool): no pool size.
            kwargs.pop("pool_size", None)
            kwargs.pop("max_overflow", None)
        else:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_recycle", POOL_RECYCLE_SECONDS)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 (legacy transaction control) only sends BEGIN before a write, so a
    # SAVEPOINT sent earlier would open the transaction itself and its RELEASE would commit
    # the caller's work. Turn that off and let SQLAlchemy send BEGIN (`_sqlite_begin`), as
    # SQLAlchemy's pysqlite documentation recommends; savepoints then nest as on PostgreSQL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    # writes fails at once with "database is locked" when another writer got there first
    # (SQLite cannot wait on a lock upgrade); an immediate one waits its turn (busy_timeout).
    # Read-only work runs on `read_only(engine)`: a deferred transaction reads a WAL
    # snapshot without the write lock, so it neither waits for writers nor, inside a
    # request that holds the lock, for its own thread.
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def read_only(engine: Engine) -> Engine:
    """The same engine (and pool), for work that only reads and never writes.

    SQLite: deferred transactions, which read a WAL snapshot without the write lock.
    PostgreSQL: autocommit, so a read is one round trip instead of BEGIN, the query and
    COMMIT; each statement then reads committed data on its own (no snapshot shared
    between statements, which read-only work here does not need)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (objects are handed to Authlib)."""
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session


@functools.cache
def libpq_dialect() -> Dialect:
    """PostgreSQL with libpq's own numbered parameters ($1, $2, ...), for statements sent
    over libpq directly (`idp.async_db`'s `fetch_flags` and `fetch_row`). Made on first
    use: a service on SQLite never imports the PostgreSQL dialect (start-up time)."""
    from sqlalchemy.dialects.postgresql import psycopg

    return psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


_DRIVER_SQL: dict[tuple[int, str, str], tuple[str, tuple[str, ...] | None]] = {}
#: Each SQLite statement `driver_sql` compiled, by its SQL: `idp.loop_sqlite` applies its
#: parameters' and columns' processing (SQLite's driver stores datetimes and JSON as text).
_SQLITE_COMPILED: dict[str, SQLCompiler] = {}


def driver_sql(dialect: Dialect, statement: ClauseElement) -> tuple[str, tuple[str, ...] | None]:
    """`statement` (built once, at import) compiled for `dialect` once: its SQL, and the
    order of its parameters when the driver's parameters are positional. For statements
    sent to the driver directly, on the event loop (`idp.async_db`) or as driver SQL."""
    key = (id(statement), dialect.name, dialect.paramstyle)
    compiled = _DRIVER_SQL.get(key)
    if compiled is None:
        sql = statement.compile(dialect=dialect)
        assert isinstance(sql, SQLCompiler)
        order = tuple(sql.positiontup) if sql.positional and sql.positiontup else None
        compiled = _DRIVER_SQL[key] = (sql.string, order)
        if dialect.name == "sqlite":
            _SQLITE_COMPILED[sql.string] = sql
    return compiled


def sqlite_compiled(sql: str) -> SQLCompiler:
    """The compilation `driver_sql` made of `sql` for SQLite (KeyError for SQL it did
    not make)."""
    return _SQLITE_COMPILED[sql]


def in_utc(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row read by the driver directly with its timestamps in UTC, as a session reads
    them (`UTCDateTime`): psycopg gives them in the connection's time zone."""
    return tuple(v.astimezone(dt.UTC) if isinstance(v, dt.datetime) else v for v in row)


def driver_values(dialect: Dialect, table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` (values of `table`'s columns by name) as the driver of `dialect` takes it,
    for statements sent to it directly: on PostgreSQL JSON columns' values wrapped as
    JSON (a bare list would be sent as an array), everything else as it is; on SQLite as
    it is (`idp.loop_sqlite` processes each parameter as its column's type would)."""
    if dialect.name == "sqlite":
        return dict(row)
    from psycopg.types.json import Json

    json_columns = _json_columns(table)
    return {k: Json(v) if k in json_columns else v for k, v in row.items()}


@functools.cache
def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))
