"""SAVEPOINTs that behave alike on PostgreSQL and SQLite, so one failed insert can be
caught without losing the caller's transaction.

Python's `sqlite3` module (legacy transaction control, Python < 3.12 and the default
after) only sends BEGIN before an INSERT, UPDATE or DELETE. A SAVEPOINT sent before any
of those opens the transaction itself, and its RELEASE then commits everything: the
caller's later rollback would not undo it. Opening the transaction explicitly first
keeps the savepoint nested, as it is on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, SessionTransaction


@contextmanager
def savepoint(db: Session) -> Iterator[SessionTransaction]:
    """`db.begin_nested()`, with the outer transaction really begun on SQLite first."""
    connection = db.connection()
    if connection.dialect.name == "sqlite":
        dbapi = connection.connection.dbapi_connection
        if dbapi is not None and not getattr(dbapi, "in_transaction", True):
            connection.exec_driver_sql("BEGIN")
    with db.begin_nested() as nested:
        yield nested
