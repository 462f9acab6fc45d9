"""SQLite on the event loop, for introspection's one read: whether an access token (or its
grant) was revoked.

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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine


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

    def _connect(self) -> sqlite3.Connection:
        # Autocommit (no implicit BEGIN): each SELECT reads the latest committed data.
        connection = sqlite3.connect(
            self._path, timeout=0, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            connection.close()
            raise
        self._connection = connection
        return connection

    def close(self) -> None:
        """Close the connection (a later read opens a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
