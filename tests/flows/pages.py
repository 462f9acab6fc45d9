"""What the tests of the hosted pages' event-loop paths share: the backend they run on,
and what a journey left in the database."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select

from idp.crypto import token_digest
from idp.models import AuditEvent, LoginTransaction
from tests.conftest import LiveServer

#: The pages' clock in these tests (the `clock` fixture), so delays and codes are exact.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def on_postgresql(server: LiveServer) -> bool:
    """Whether `server` runs on PostgreSQL (where the event-loop paths answer)."""
    return server.services.engine.dialect.name == "postgresql"


@contextmanager
def write_lock_held_elsewhere(server: LiveServer, seconds: float = 0.3) -> Iterator[None]:
    """SQLite: while the block runs, another connection (another process's, say) holds
    the write lock, for `seconds` from the start: the event loop must not wait for it,
    and a worker thread then waits its turn."""
    assert not on_postgresql(server), "SQLite's write lock"
    database = str(server.services.engine.url.database)
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds, holder.execute, ["ROLLBACK"])
    release.start()
    try:
        yield
    finally:
        release.join()
        holder.close()


def transaction(server: LiveServer, tx: str) -> LoginTransaction:
    """The login transaction `tx`, as stored now."""
    with server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(tx))
        assert row is not None
        return row


def events(server: LiveServer, name: str, *, account_id: str | None) -> list[AuditEvent]:
    """The audit events called `name` of the account `account_id` (None: of no account)."""
    with server.services.sessions() as db:
        query = select(AuditEvent).where(
            AuditEvent.event == name,
            AuditEvent.account_id.is_(None)
            if account_id is None
            else AuditEvent.account_id == account_id,
        )
        return list(db.scalars(query))
