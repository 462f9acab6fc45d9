"""SQLite on the event loop: introspection's one read (whether an access token or its
grant was revoked, `LoopReader`), and the hosted sign-in's usual POSTs (`SqliteOnLoop`).

On SQLite that read is a lookup by primary key in the process itself, a few microseconds;
the hop to a worker thread and back cost several times the query (bench/README.md). So
it runs on the event loop instead, on a connection of its own that never waits: no busy
timeout, and `query_only`. In WAL mode (`idp.db`) a reader does not wait for writers;
where it would have to (another process holding the database exclusively, the WAL index
being rebuilt), the read fails at once with `sqlite3.OperationalError` and the caller
takes the threaded path, which waits its turn. The connection is then dropped and opened
again on the next read.

An in-memory database exists only on its own connection, and a URL with query options may
ask for something this connection would not do alike: for those, `for_engine` gives None.

The POSTs' transactions go the same way (`SqliteOnLoop.transaction`): BEGIN IMMEDIATE on a
connection of the loop's own that never waits, so while another connection (a worker
thread's, another process's) holds the write lock, it raises `Busy` at once and the POST
takes its threaded path, which waits its turn. Nothing awaits between a transaction's
BEGIN and its COMMIT, so the loop never holds the lock across another request's work. Its
statements are those the PostgreSQL paths send, compiled for SQLite (`idp.db.driver_sql`),
their parameters and rows processed as their columns' types would be in a session.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import Dialect, Engine

from idp.async_db import AsyncDatabase, Transaction, async_db
from idp.db import sqlite_compiled

if TYPE_CHECKING:
    from idp.app import Services

log = logging.getLogger(__name__)
#: The loop's writer never checkpoints as it commits (a checkpoint writes and syncs the
#: database file: too long for the event loop); after this many commits a worker thread
#: runs a passive checkpoint instead, as SQLite's own automatic one would after about as
#: many pages.
CHECKPOINT_EVERY = 500


class LoopReader:
    """One SQLite connection for reads, used from the event loop alone (one read at a
    time, never across an `await`); closed by whichever thread ends the application."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> LoopReader | None:
        """A reader of `engine`'s database file, or None where it cannot have one."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.query:
            return None
        if not url.database or url.database == ":memory:":
            return None
        return cls(url.database)

    def fetch_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row of `sql` (qmark parameters), or None; `sqlite3.Error` when the
        database cannot be read at once (the connection is then closed)."""
        connection = self._connection or self._connect()
        try:
            row: tuple[Any, ...] | None = connection.execute(sql, params).fetchone()
        except sqlite3.Error:
            self.close()
            raise
        return row

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def fetch_all(
        self, processing: _Processing, sql: str, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Every row of `sql` (driver SQL of `idp.db.driver_sql`), its parameters and rows
        processed by `processing`; `sqlite3.Error` as `fetch_one`."""
        connection = self._connection or self._connect()
        try:
            raw = connection.execute(sql, processing.parameters(values)).fetchall()
        except sqlite3.Error:
            self.close()
            raise
        return processing.rows(raw)

    def _connect(self) -> sqlite3.Connection:
        self._connection = _never_waiting(self._path, "query_only=ON")
        return self._connection

    def close(self) -> None:
        """Close the connection (a later read opens a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _never_waiting(path: str, *pragmas: str) -> sqlite3.Connection:
    """A connection to `path` with no busy timeout, in autocommit (no implicit BEGIN:
    each statement outside a transaction reads the latest committed data), `pragmas`
    set."""
    connection = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        for pragma in pragmas:
            connection.execute(f"PRAGMA {pragma}")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


class Busy(Exception):  # noqa: N818 (an outcome, not an error of the caller's)
    """SQLite could not be read or written on the event loop at once (another connection
    holds the lock, or the driver failed; nothing was changed): take the threaded path,
    which waits its turn or says what went wrong."""


class _Processing:
    """A statement's parameters and result columns processed as their types would be in
    a session (UTC datetimes stored naive, JSON as text, booleans as integers)."""

    __slots__ = ("_binds", "_defaults", "_names", "_results")

    def __init__(self, sql: str, dialect: Dialect) -> None:
        compiled = sqlite_compiled(sql)
        self._names: Sequence[str] = compiled.positiontup or ()
        binds = [compiled.binds[name] for name in self._names]
        self._binds = [bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds]
        #: The values the statement holds itself (the OFFSET 0 that SQLite's LIMIT
        #: brings along, say).
        self._defaults = {
            name: bind.effective_value
            for name, bind in zip(self._names, binds, strict=True)
            if not bind.required
        }
        self._results: list[Callable[[Any], Any] | None] = [
            column[3].dialect_impl(dialect).result_processor(dialect, None)
            for column in compiled._result_columns
        ]

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        defaults = self._defaults
        for name, process in zip(self._names, self._binds, strict=True):
            value = values[name] if name in values else defaults[name]
            out.append(value if process is None or value is None else process(value))
        return out

    def rows(self, raw: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        results = self._results
        return [
            tuple(
                value if process is None or value is None else process(value)
                for process, value in zip(results, row, strict=True)
            )
            for row in raw
        ]


Statement = tuple[str, Mapping[str, Any]]


class SqliteOnLoop:
    """SQLite's counterpart, for the sign-in POSTs, of `idp.async_db.AsyncDatabase`:
    `fetch_all` reads outside a transaction, `transaction()` writes, both at once or
    not at all (`Busy`). Used from the event loop alone; closed by whichever thread ends
    the application."""

    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        self._dialect = dialect
        self._reader = LoopReader(path)
        self._writer: sqlite3.Connection | None = None
        self._processing: dict[str, _Processing] = {}
        self._commits = 0

    @classmethod
    def for_engine(cls, engine: Engine) -> SqliteOnLoop | None:
        """The loop's connections to `engine`'s database file, or None where it cannot
        have them (as `LoopReader.for_engine`)."""
        reader = LoopReader.for_engine(engine)
        return None if reader is None else cls(reader.path, engine.dialect)

    def processing(self, sql: str) -> _Processing:
        """How `sql`'s parameters and rows are processed (worked out once)."""
        processing = self._processing.get(sql)
        if processing is None:
            processing = self._processing[sql] = _Processing(sql, self._dialect)
        return processing

    async def fetch_all(self, *statements: Statement) -> list[list[tuple[Any, ...]]]:
        """Every row of each of `statements`, each read on its own (latest committed
        data); `Busy` when the database cannot be read at once."""
        try:
            return [
                self._reader.fetch_all(self.processing(sql), sql, values)
                for sql, values in statements
            ]
        except sqlite3.Error as exc:
            raise Busy(exc.__class__.__name__) from exc

    def transaction(self) -> SqliteTransaction:
        """`async with database.transaction() as tx:` BEGIN IMMEDIATE ... COMMIT (ROLLBACK
        if the block raises); `Busy` at its start if the write lock is held elsewhere."""
        return SqliteTransaction(self)

    def _begin(self) -> sqlite3.Connection:
        connection = self._writer or self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if not isinstance(exc, sqlite3.OperationalError) or "locked" not in str(exc):
                self._close_writer()
            raise Busy(exc.__class__.__name__) from exc
        return connection

    def _roll_back(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            self._close_writer()

    def _committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0:
            threading.Thread(target=self._checkpoint, name="sqlite-checkpoint", daemon=True).start()

    def _checkpoint(self) -> None:
        try:
            with contextlib.closing(sqlite3.connect(self._path, timeout=5)) as connection:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.warning("a passive WAL checkpoint failed", exc_info=True)

    def _connect(self) -> sqlite3.Connection:
        # As the engine's connections (`idp.db`), but never waiting nor checkpointing.
        self._writer = _never_waiting(
            self._path, "foreign_keys=ON", "synchronous=NORMAL", "wal_autocheckpoint=0"
        )
        return self._writer

    def _close_writer(self) -> None:
        connection, self._writer = self._writer, None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close both connections."""
        self._reader.close()
        self._close_writer()


class SqliteTransaction:
    """One transaction of `SqliteOnLoop.transaction`, with the methods of
    `idp.async_db.Transaction`; its statements run as they are given."""

    def __init__(self, database: SqliteOnLoop) -> None:
        self._database = database
        self._connection: sqlite3.Connection | None = None

    async def __aenter__(self) -> SqliteTransaction:
        self._connection = self._database._begin()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        assert connection is not None
        if exc is None:
            try:
                connection.execute("COMMIT")
            except sqlite3.Error as error:
                self._database._roll_back(connection)
                raise Busy(error.__class__.__name__) from error
            self._database._committed()
            return
        self._database._roll_back(connection)
        if isinstance(exc, sqlite3.Error):  # the threaded path does it again, or says why
            raise Busy(exc.__class__.__name__) from exc

    def _execute(self, sql: str, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        assert self._connection is not None, "outside its `async with`"
        processing = self._database.processing(sql)
        raw = self._connection.execute(sql, processing.parameters(values)).fetchall()
        return processing.rows(raw)

    async def fetch_one(self, sql: str, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of `sql`, or None."""
        rows = self._execute(sql, values)
        return rows[0] if rows else None

    async def fetch_all(self, *statements: Statement) -> list[list[tuple[Any, ...]]]:
        """Every row of each of `statements`."""
        return [self._execute(sql, values) for sql, values in statements]

    def defer(self, sql: str, values: Mapping[str, Any]) -> None:
        """Run `sql` (with PostgreSQL it would travel with the COMMIT)."""
        self._execute(sql, values)


#: A transaction on the event loop, on either database.
LoopTransaction: TypeAlias = Transaction | SqliteTransaction


def sqlite_on_loop(services: Services, engine: Engine | None = None) -> SqliteOnLoop | None:
    """The process's `SqliteOnLoop` for the file of `engine` (the service's by default; the
    throttle's sidecar, say), made on first use (on the event loop) and closed with the
    application (`close_all`); None on PostgreSQL and where SQLite cannot be used so."""
    engine = engine or services.engine
    databases = services.extras.setdefault("sqlite_on_loop", {})
    assert isinstance(databases, dict)
    key = engine.url.database
    if key not in databases:
        databases[key] = (
            SqliteOnLoop.for_engine(engine) if engine.dialect.name == "sqlite" else None
        )
    database: SqliteOnLoop | None = databases[key]
    return database


def loop_database(services: Services) -> AsyncDatabase | SqliteOnLoop | None:
    """Where the event loop reads and writes the service's database: PostgreSQL over
    `idp.async_db`, SQLite over a `SqliteOnLoop`; None where it cannot (an in-memory
    SQLite database)."""
    if services.engine.dialect.name == "postgresql":
        return async_db(services)
    return sqlite_on_loop(services)


def loop_databases(
    services: Services, throttle: Engine
) -> tuple[AsyncDatabase | SqliteOnLoop, SqliteOnLoop | None] | None:
    """`loop_database`, and the file of the failure counters of the database throttle on
    `throttle` (None on PostgreSQL, where they are in the same database); None where the
    loop cannot have both."""
    database = loop_database(services)
    if not isinstance(database, SqliteOnLoop):
        return None if database is None else (database, None)
    counters = sqlite_on_loop(services, throttle)  # `DatabaseThrottle.for_engine`'s sidecar
    return None if counters is None else (database, counters)


def close_all(services: Services) -> None:
    """Close every `SqliteOnLoop` of `services` (at application shutdown)."""
    databases = services.extras.pop("sqlite_on_loop", {})
    assert isinstance(databases, dict)
    for database in databases.values():
        if database is not None:
            database.close()
