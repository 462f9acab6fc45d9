"""idp.loop_sqlite: introspection's revocation read on the event loop, on SQLite. It reads
the latest committed data, cannot write, and never waits: a database it cannot read at
once raises (the caller then reads in a worker thread, which waits). The sign-in POSTs'
transactions there (`SqliteOnLoop`) never wait for the write lock either, write values
as a session would, and leave checkpoints to a worker thread."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
)

from idp import loop_sqlite
from idp.db import driver_sql, make_engine
from idp.loop_sqlite import Busy, LoopReader, SqliteOnLoop
from idp.models.base import UTCDateTime
from tests.loops import run_on_fresh_loop


@pytest.fixture
def path(tmp_path: Path) -> str:
    file = str(tmp_path / "loop.sqlite3")
    engine = make_engine(f"sqlite:///{file}")  # WAL, as the service runs it
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, revoked BOOLEAN)")
        connection.exec_driver_sql("INSERT INTO t VALUES ('a', 0)")
    engine.dispose()
    return file


def writer(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_each_read_sees_the_latest_committed_data(path: str) -> None:
    reader = LoopReader(path)
    assert reader.fetch_one("SELECT revoked FROM t WHERE k = ?", ("a",)) == (0,)
    with writer(path) as other:
        other.execute("UPDATE t SET revoked = 1 WHERE k = 'a'")
    assert reader.fetch_one("SELECT revoked FROM t WHERE k = ?", ("a",)) == (1,)
    assert reader.fetch_one("SELECT revoked FROM t WHERE k = ?", ("missing",)) is None
    reader.close()


def test_it_cannot_write_and_recovers_from_an_error(path: str) -> None:
    reader = LoopReader(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.fetch_one("UPDATE t SET revoked = 1 WHERE k = ?", ("a",))
    assert reader.fetch_one("SELECT revoked FROM t WHERE k = ?", ("a",)) == (0,)
    reader.close()


def test_a_database_held_exclusively_fails_at_once_instead_of_waiting(path: str) -> None:
    reader = LoopReader(path)
    # SQLite lets one connection hold a WAL database for itself only while no other has
    # read it (each keeps a shared lock): the reader has not, yet.
    holder = writer(path)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE t SET revoked = 1 WHERE k = 'a'")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            reader.fetch_one("SELECT revoked FROM t WHERE k = ?", ("a",))
        assert time.monotonic() - started < 1.0  # the service's busy timeout is 30 s
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert reader.fetch_one("SELECT revoked FROM t WHERE k = ?", ("a",)) == (1,)
    reader.close()


def test_only_a_database_file_gets_a_reader(tmp_path: Path) -> None:
    file = tmp_path / "x.sqlite3"
    reader = LoopReader.for_engine(create_engine(f"sqlite:///{file}"))
    assert reader is not None
    assert LoopReader.for_engine(create_engine("sqlite://")) is None
    assert LoopReader.for_engine(create_engine("sqlite:///:memory:")) is None
    assert LoopReader.for_engine(create_engine(f"sqlite:///{file}?timeout=5")) is None
    assert LoopReader.for_engine(create_engine("postgresql+psycopg://u@127.0.0.1:1/x")) is None


# SqliteOnLoop: the POSTs' transactions, which begin only if the write lock is free.

_METADATA = MetaData()
_EVENTS = Table(
    "events",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("detail", JSON(), nullable=False),
    Column("done", Boolean(), nullable=False),
)
_INSERT = insert(_EVENTS).values({name: bindparam(name) for name in ("id", "at", "detail", "done")})
_SELECT = select(_EVENTS.c.at, _EVENTS.c.detail, _EVENTS.c.done).where(
    _EVENTS.c.id == bindparam("id")
)
AT = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[SqliteOnLoop, Engine]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loop.sqlite3'}")
    _METADATA.create_all(engine)
    with sqlite3.connect(str(engine.url.database)) as connection:  # into the file itself
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    on_loop = SqliteOnLoop.for_engine(engine)
    assert on_loop is not None
    yield on_loop, engine
    on_loop.close()
    engine.dispose()


def _insert(id_: int) -> tuple[str, dict[str, Any]]:
    values = {"id": id_, "at": AT, "detail": {"kind": ["pwd"]}, "done": True}
    return driver_sql(make_engine("sqlite://").dialect, _INSERT)[0], values


def _select(id_: int) -> tuple[str, dict[str, Any]]:
    return driver_sql(make_engine("sqlite://").dialect, _SELECT)[0], {"id": id_}


def test_what_the_loop_writes_reads_back_as_a_session_reads_it(database) -> None:
    async def body() -> None:
        on_loop, engine = database
        async with on_loop.transaction() as transaction:
            transaction.defer(*_insert(1))
            assert await transaction.fetch_one(*_select(1)) == (AT, {"kind": ["pwd"]}, True)
        with engine.connect() as connection:  # SQLAlchemy's own processing, the other way
            row = connection.execute(_SELECT, {"id": 1}).one()
        assert tuple(row) == (AT, {"kind": ["pwd"]}, True)
        assert row.at.tzinfo == dt.UTC
        assert await on_loop.fetch_all(_select(1), _select(2)) == [
            [(AT, {"kind": ["pwd"]}, True)],
            [],
        ]


def test_a_block_that_raises_writes_nothing(database) -> None:
    async def body() -> None:
        on_loop, _ = database

        async def insert_then_fail() -> None:
            async with on_loop.transaction() as transaction:
                transaction.defer(*_insert(1))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await insert_then_fail()
        assert await on_loop.fetch_all(_select(1)) == [[]]
        async with on_loop.transaction() as transaction:  # and the connection is usable
            transaction.defer(*_insert(1))
        assert len((await on_loop.fetch_all(_select(1)))[0]) == 1


def test_a_driver_error_rolls_back_and_sends_the_caller_to_its_thread(database) -> None:
    async def body() -> None:
        on_loop, _ = database

        async def insert_twice() -> None:
            async with on_loop.transaction() as transaction:
                transaction.defer(*_insert(1))
                transaction.defer(*_insert(1))  # the same primary key

        with pytest.raises(Busy):
            await insert_twice()
        assert await on_loop.fetch_all(_select(1)) == [[]]


def test_a_held_write_lock_is_never_waited_for(database) -> None:
    async def body() -> None:
        on_loop, engine = database
        holder = writer(engine.url.database)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(Busy):
                async with on_loop.transaction() as transaction:
                    transaction.defer(*_insert(1))
            assert time.monotonic() - started < 1.0  # the engine's busy timeout is 30 s
            # Reads go on: WAL readers do not wait for the writer.
            assert await on_loop.fetch_all(_select(1)) == [[]]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        async with on_loop.transaction() as transaction:
            transaction.defer(*_insert(1))
        assert len((await on_loop.fetch_all(_select(1)))[0]) == 1


def test_the_loop_never_checkpoints_and_a_thread_does(database, monkeypatch) -> None:
    async def body() -> None:
        on_loop, engine = database
        monkeypatch.setattr(loop_sqlite, "CHECKPOINT_EVERY", 3)
        file = f"file:{engine.url.database}?immutable=1"  # the database file alone, no WAL

        def in_the_file() -> int:
            with sqlite3.connect(file, uri=True) as connection:
                return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])

        for id_ in (1, 2):
            async with on_loop.transaction() as transaction:
                transaction.defer(*_insert(id_))
        assert in_the_file() == 0  # committed to the WAL only
        async with on_loop.transaction() as transaction:
            transaction.defer(*_insert(3))
        for _ in range(100):  # the third commit started the checkpoint's thread
            if in_the_file() == 3:
                break
            time.sleep(0.02)
        assert in_the_file() == 3

    run_on_fresh_loop(body())
