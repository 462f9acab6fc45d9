"""idp.loop_sqlite: introspection's revocation read on the event loop, on SQLite. It reads
the latest committed data, cannot write, and never waits: a database it cannot read at
once raises (the caller then reads in a worker thread, which waits)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from idp.db import make_engine
from idp.loop_sqlite import LoopReader


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
