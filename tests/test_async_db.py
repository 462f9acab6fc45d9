"""The event-loop reads (idp.async_db) on a real PostgreSQL: answers, the connection
limit, a connection killed by the server dropped and replaced, and closing."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from idp import async_db
from idp.async_db import AsyncDatabase
from tests.loops import run_on_fresh_loop


@pytest.fixture
def pg_url(postgres_database: str | None) -> str:
    if postgres_database is None:
        pytest.skip("PostgreSQL not configured: set IDP_TEST_DATABASE_URL")
    return postgres_database


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    run_on_fresh_loop(coroutine)


def _reads(url: str, size: int, timeout: float = 30.0) -> AsyncDatabase:
    engine = create_engine(url)
    try:
        return AsyncDatabase.for_engine(engine, size=size, timeout=timeout)
    finally:
        engine.dispose()


def test_a_read_answers_its_row_in_autocommit(pg_url: str) -> None:
    async def main() -> None:
        reads = _reads(pg_url, 2)
        try:
            assert await reads.fetch_one("SELECT %s::int + 1", (41,)) == (42,)
            assert await reads.fetch_one("SELECT %(a)s::text", {"a": "x"}) == ("x",)
            assert await reads.fetch_one("SELECT 1 WHERE false", ()) is None
            # Autocommit: no transaction is left open between reads.
            (state,) = await reads.fetch_one("SELECT now() = statement_timestamp()", ())
            assert state is True
        finally:
            await reads.close()

    run(main())


def test_no_more_connections_than_the_size(pg_url: str) -> None:
    async def main() -> None:
        reads = _reads(pg_url, 2)
        try:
            pids = await asyncio.gather(
                *(
                    reads.fetch_one("SELECT pg_backend_pid() FROM pg_sleep(0.05)", ())
                    for _ in range(8)
                )
            )
            assert len({pid for (pid,) in pids}) == 2
        finally:
            await reads.close()

    run(main())


def _terminate(pg_url: str, pid: int) -> None:
    """End the server's backend `pid`, as a restart or an administrator would."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


def test_a_connection_the_server_killed_is_dropped_and_replaced(pg_url: str) -> None:
    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            (pid,) = await reads.fetch_one("SELECT pg_backend_pid()", ())
            _terminate(pg_url, pid)
            import psycopg

            with pytest.raises(psycopg.OperationalError):
                await reads.fetch_one("SELECT 1", ())
            (again,) = await reads.fetch_one("SELECT pg_backend_pid()", ())
            assert again != pid
        finally:
            await reads.close()

    run(main())


def test_close_closes_the_idle_connections(pg_url: str) -> None:
    async def main() -> None:
        reads = _reads(pg_url, 2)
        await reads.fetch_one("SELECT 1", ())
        idle = list(reads._idle)
        await reads.close()
        assert idle
        assert all(connection.closed for connection in idle)

    run(main())


def test_a_transaction_commits_its_deferred_statements_or_rolls_everything_back(
    pg_url: str,
) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS async_tx (k text PRIMARY KEY, v int)"))
        conn.execute(text("TRUNCATE async_tx"))
        conn.execute(text("INSERT INTO async_tx VALUES ('a', 1)"))

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            async with reads.transaction() as tx:
                row = await tx.fetch_one("UPDATE async_tx SET v = v + 1 RETURNING v", ())
                assert row == (2,)
                tx.defer("INSERT INTO async_tx VALUES (%s, %s)", ("b", 20))

            async def abandoned() -> None:
                async with reads.transaction() as tx:
                    await tx.fetch_one("UPDATE async_tx SET v = v + 100 RETURNING v", ())
                    tx.defer("INSERT INTO async_tx VALUES (%s, %s)", ("c", 30))
                    raise RuntimeError("changed my mind")

            async def failing_commit() -> None:
                async with reads.transaction() as tx:
                    await tx.fetch_one("UPDATE async_tx SET v = v + 1000 RETURNING v", ())
                    tx.defer("INSERT INTO async_tx VALUES (%s, %s)", ("a", 0))  # a duplicate

            with pytest.raises(RuntimeError, match="changed my mind"):
                await abandoned()
            import psycopg

            with pytest.raises(psycopg.errors.UniqueViolation):
                await failing_commit()
            # The connection is usable afterwards, and outside any transaction.
            assert await reads.fetch_one("SELECT count(*) FROM async_tx", ()) == (2,)
        finally:
            await reads.close()

    try:
        run(main())
        with admin.connect() as conn:
            rows = dict(conn.execute(text("SELECT k, v FROM async_tx")).all())
        assert rows == {"a": 2, "b": 20}
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP TABLE async_tx"))
        admin.dispose()


def test_fetch_all_sends_statements_together_inside_the_transaction(pg_url: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE TABLE async_all (k text PRIMARY KEY, v int)"))
        conn.execute(text("INSERT INTO async_all VALUES ('a', 1), ('b', 2)"))

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            # As the first statements: they carry the BEGIN, so a rollback undoes them.
            async def undone() -> None:
                async with reads.transaction() as tx:
                    everything, changed = await tx.fetch_all(
                        ("SELECT k, v FROM async_all ORDER BY k", ()),
                        ("UPDATE async_all SET v = v * 10 WHERE k = %(k)s RETURNING v", {"k": "a"}),
                    )
                    assert everything == [("a", 1), ("b", 2)]
                    assert changed == [(10,)]
                    raise RuntimeError("undo")

            with pytest.raises(RuntimeError, match="undo"):
                await undone()
            # After a first statement, and with the deferred ones, committed.
            async with reads.transaction() as tx:
                assert await tx.fetch_one("SELECT v FROM async_all WHERE k = 'b'", ()) == (2,)
                none, changed = await tx.fetch_all(
                    ("SELECT k FROM async_all WHERE false", ()),
                    ("UPDATE async_all SET v = v + 1 RETURNING k", ()),
                )
                assert none == []
                assert sorted(changed) == [("a",), ("b",)]
                tx.defer("INSERT INTO async_all VALUES (%s, %s)", ("c", 3))
        finally:
            await reads.close()

    try:
        run(main())
        with admin.connect() as conn:
            rows = dict(conn.execute(text("SELECT k, v FROM async_all")).all())
        assert rows == {"a": 2, "b": 3, "c": 3}
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP TABLE async_all"))
        admin.dispose()


def test_waiting_for_a_connection_gives_up_after_the_timeout(pg_url: str) -> None:
    async def main() -> None:
        reads = _reads(pg_url, 1, timeout=0.2)
        try:
            async with reads.transaction() as tx:
                await tx.fetch_one("SELECT 1", ())
                with pytest.raises(TimeoutError):  # the one connection is taken
                    await reads.fetch_one("SELECT 2", ())
            assert await reads.fetch_one("SELECT 3", ()) == (3,)  # and free again
        finally:
            await reads.close()

    run(main())


def test_waiters_that_give_up_leave_the_queue_and_pass_on_a_turn_given_to_them(
    pg_url: str,
) -> None:
    """A waiter that times out or is cancelled leaves the queue; one cancelled just after
    it was woken passes its turn on, so nobody behind it waits for a connection that is
    free."""

    async def main() -> None:
        reads = _reads(pg_url, 1, timeout=5.0)
        try:
            async with reads.transaction() as tx:
                await tx.fetch_one("SELECT 1", ())
                cancelled = asyncio.ensure_future(reads.fetch_one("SELECT 2", ()))
                woken_then_cancelled = asyncio.ensure_future(reads.fetch_one("SELECT 3", ()))
                patient = asyncio.ensure_future(reads.fetch_one("SELECT 4", ()))
                await asyncio.sleep(0.05)  # all three wait now, in that order
                cancelled.cancel()
                await asyncio.sleep(0)
                assert len(reads._waiters) == 2
            # The block's connection is free: `woken_then_cancelled` has been woken, and
            # is cancelled before it could take it.
            woken_then_cancelled.cancel()
            assert await asyncio.wait_for(patient, 2.0) == (4,)
            assert cancelled.cancelled()
            assert woken_then_cancelled.cancelled()
            assert not reads._waiters
        finally:
            await reads.close()

    run(main())


FLAGS = "SELECT $1::text = 'yes', $2::text IS NULL"


def test_fetch_flags_answers_a_row_of_booleans_over_libpq(pg_url: str) -> None:
    """`fetch_flags` (introspection's read): text parameters, None as NULL, a prepared
    statement made once per connection and used again, and the connection left idle for
    psycopg's own reads."""

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            assert await reads.fetch_flags(FLAGS, ("yes", None)) == (True, True)
            assert await reads.fetch_flags(FLAGS, ("no", "x")) == (False, False)
            assert await reads.fetch_flags("SELECT $1::text = 'ü'", ("ü",)) == (True,)
            (prepared,) = await reads.fetch_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'idp_%%'", ()
            )
            assert prepared == 2  # one per statement, not one per call
            assert await reads.fetch_one("SELECT 41 + 1", ()) == (42,)
        finally:
            await reads.close()

    run(main())


@pytest.mark.parametrize(
    ("sql", "params", "error"),
    [
        ("SELECT 1 / $1::int = 1", ("0",), "division by zero"),
        ("SELECT no_such_column", (), "no_such_column"),
        ("SELECT true WHERE false", (), "0 rows"),
        ("SELECT 'maybe'::text", (), "not a row of booleans"),
        ("SELECT NULL::boolean", (), "not a row of booleans"),
    ],
)
def test_fetch_flags_refuses_what_is_not_one_row_of_booleans(
    pg_url: str, sql: str, params: tuple[str, ...], error: str
) -> None:
    """A failed statement, no row, or a value that is not a boolean raises; a failed
    connection is replaced and the pool goes on answering."""
    import psycopg

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            with pytest.raises((psycopg.Error, ValueError), match=error):
                await reads.fetch_flags(sql, params)
            assert await reads.fetch_flags(FLAGS, ("yes", None)) == (True, True)
        finally:
            await reads.close()

    run(main())


def test_fetch_flags_on_a_killed_or_cancelled_connection_replaces_it(pg_url: str) -> None:
    import psycopg

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            (pid,) = await reads.fetch_one("SELECT pg_backend_pid()", ())
            await reads.fetch_flags(FLAGS, ("yes", None))  # prepared on that connection
            _terminate(pg_url, pid)
            with pytest.raises(psycopg.OperationalError):
                await reads.fetch_flags(FLAGS, ("yes", None))
            assert await reads.fetch_flags(FLAGS, ("no", None)) == (False, True)
            # Cancelled while the server works: the connection's state is unknown, so it
            # is dropped, not handed to the next request mid-query.
            slow = asyncio.ensure_future(reads.fetch_flags("SELECT pg_sleep(5) IS NULL", ()))
            await asyncio.sleep(0.2)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            assert reads._open == 0
            assert await reads.fetch_flags(FLAGS, ("yes", "x")) == (True, False)
        finally:
            await reads.close()

    run(main())


def test_fetch_row_dumps_and_loads_as_a_cursor_would(pg_url: str) -> None:
    """`fetch_row` (the refresh's statement): parameters of any type psycopg dumps, sent as
    text (a timestamp with its offset, None as NULL, text that looks like SQL); values
    loaded by psycopg's adapters (timestamps aware, JSON parsed); no row is None; a
    prepared statement made once per connection."""
    import datetime as dt

    at = dt.datetime(2026, 12, 3, 14, 0, 1, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    sql = (
        "SELECT $1::timestamptz + interval '1 second', $2::text, $3::text IS NULL, "
        '\'["pwd", "otp"]\'::json, $4::int * 2'
    )

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            row = await reads.fetch_row(sql, (at, "'); DROP TABLE x; --", None, 21))
            assert row is not None
            later, echoed, missing, amr, doubled = row
            assert later == at + dt.timedelta(seconds=1)
            assert later.tzinfo is not None
            assert echoed == "'); DROP TABLE x; --"
            assert (missing, amr, doubled) == (True, ["pwd", "otp"], 42)
            assert await reads.fetch_row("SELECT 1 WHERE $1::int = 0", (1,)) is None
            assert await reads.fetch_row(sql, (at, "again", "x", 1)) is not None
            (prepared,) = await reads.fetch_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'idp_%%'", ()
            )
            assert prepared == 2
        finally:
            await reads.close()

    run(main())


def test_fetch_row_raises_on_a_failed_statement_and_goes_on(pg_url: str) -> None:
    import psycopg

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            with pytest.raises(psycopg.Error, match="division by zero"):
                await reads.fetch_row("SELECT 1 / $1::int", (0,))
            with pytest.raises(psycopg.Error, match="no_such_column"):
                await reads.fetch_row("SELECT no_such_column", ())
            assert await reads.fetch_row("SELECT $1::int + 1", (41,)) == (42,)
        finally:
            await reads.close()

    run(main())


def test_fetch_all_outside_a_transaction_answers_each_statement_s_rows(pg_url: str) -> None:
    import psycopg

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            answers = await reads.fetch_all(
                ("SELECT %s::int + 1", (41,)),
                ("SELECT g FROM generate_series(1, %(n)s::int) AS g", {"n": 3}),
                ("SELECT 1 WHERE false", ()),
                ("SET LOCAL statement_timeout = 1000", ()),  # no rows: an empty list
            )
            assert answers == [[(42,)], [(1,), (2,), (3,)], [], []]
            # No BEGIN: nothing is left open after the round trip.
            (status,) = await reads.fetch_one("SELECT now() = statement_timestamp()", ())
            assert status is True
            # A failing statement raises its error; the pool goes on with a new connection.
            with pytest.raises(psycopg.Error, match="division by zero"):
                await reads.fetch_all(("SELECT 1", ()), ("SELECT 1 / %s::int", (0,)))
            assert await reads.fetch_all(("SELECT %s::text", ("x",))) == [[("x",)]]
        finally:
            await reads.close()

    run(main())


def test_psycopg_placeholders_become_libpq_s_numbered_ones() -> None:
    """A transaction's statements are written for psycopg (`%(name)s`, `%s`, `%%`)."""
    numbered = async_db._numbered
    assert numbered("SELECT %(a)s, %(b)s, %(a)s") == (b"SELECT $1, $2, $1", ("a", "b"))
    assert numbered("SELECT %s, %s") == (b"SELECT $1, $2", None)
    assert numbered("SELECT '100%%' LIKE %(p)s") == (b"SELECT '100%' LIKE $1", ("p",))
    assert numbered("SELECT 1") == (b"SELECT 1", ())
    with pytest.raises(ValueError, match="named and positional"):
        numbered("SELECT %(a)s, %s")


def test_a_transaction_dumps_and_loads_as_a_cursor_would_and_prepares_once(
    pg_url: str,
) -> None:
    """Values go and come as through psycopg's cursor (JSON, arrays, timestamps, NULL);
    each statement is prepared once per connection for each set of parameter types."""
    import datetime as dt

    from psycopg.types.json import Json

    at = dt.datetime(2026, 12, 4, 9, 30, 15, 123456, tzinfo=dt.UTC)
    sql = (
        "SELECT %(at)s::timestamptz + interval '1 second', %(doc)s::jsonb -> 'amr',"
        " %(keys)s::text[], %(none)s::text IS NULL, %(n)s::bigint * 2"
    )
    values = {"at": at, "doc": Json({"amr": ["pwd", "otp"]}), "keys": ["a", "b"], "none": None}

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:
            for n in (5, 70_000, 6):  # an int2 and an int4 to psycopg's dumpers
                async with reads.transaction() as tx:
                    row = await tx.fetch_one(sql, {**values, "n": n})
                later = at + dt.timedelta(seconds=1)
                assert row == (later, ["pwd", "otp"], ["a", "b"], True, 2 * n)
            async with reads.transaction() as tx:
                (count,) = await tx.fetch_one(
                    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                    ("%::bigint * 2",),
                )
            assert count == 2  # one per set of types, used again by the third
        finally:
            await reads.close()

    run(main())


def test_a_failing_statement_raises_its_error_and_undoes_the_transaction(pg_url: str) -> None:
    """The statement after a failed one in the same round trip is not run; the connection
    is replaced; a value that cannot be sent raises before anything is."""
    import psycopg

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE TABLE async_fail (k text PRIMARY KEY)"))
        conn.execute(text("INSERT INTO async_fail VALUES ('a')"))

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:

            async def pid() -> int:
                async with reads.transaction() as tx:
                    (found,) = await tx.fetch_one("SELECT pg_backend_pid()", ())
                return int(found)

            first = await pid()
            with pytest.raises(psycopg.errors.UniqueViolation):
                async with reads.transaction() as tx:
                    await tx.fetch_all(
                        ("INSERT INTO async_fail VALUES (%s) RETURNING k", ("b",)),
                        ("INSERT INTO async_fail VALUES (%s) RETURNING k", ("a",)),
                        ("INSERT INTO async_fail VALUES (%s) RETURNING k", ("c",)),
                    )
            second = await pid()
            assert second != first  # its transaction failed: dropped
            with pytest.raises(psycopg.errors.UndefinedTable):
                async with reads.transaction() as tx:
                    await tx.fetch_one("SELECT * FROM async_no_such_table", ())
            third = await pid()
            assert third != second

            async def unsendable() -> None:
                async with reads.transaction() as tx:
                    await tx.fetch_one("SELECT k FROM async_fail FOR UPDATE", ())
                    await tx.fetch_one("SELECT %s", (object(),))

            # Nothing sent: the read before it rolled back, the connection used again.
            with pytest.raises(psycopg.ProgrammingError, match="cannot adapt"):
                await unsendable()
            with admin.connect() as conn:  # the row's lock was let go
                conn.execute(text("SELECT k FROM async_fail FOR UPDATE NOWAIT"))
            assert await pid() == third
            async with reads.transaction() as tx:
                rows = await tx.fetch_all(("SELECT k FROM async_fail ORDER BY k", ()))
            assert rows == [[("a",)]]  # nothing of the failed transaction's stayed
        finally:
            await reads.close()

    try:
        run(main())
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP TABLE async_fail"))
        admin.dispose()


def test_a_transaction_cancelled_or_killed_midway_drops_its_connection(pg_url: str) -> None:
    import psycopg

    async def main() -> None:
        reads = _reads(pg_url, 1)
        try:

            async def slow() -> None:
                async with reads.transaction() as tx:
                    await tx.fetch_one("SELECT pg_sleep(5)", ())

            task = asyncio.ensure_future(slow())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert reads._open == 0  # its state unknown: dropped
            assert not reads._idle
            async with reads.transaction() as tx:
                (pid,) = await tx.fetch_one("SELECT pg_backend_pid()", ())
            _terminate(pg_url, pid)
            with pytest.raises(psycopg.OperationalError):
                async with reads.transaction() as tx:
                    await tx.fetch_one("SELECT 1", ())
            async with reads.transaction() as tx:
                assert await tx.fetch_one("SELECT pg_backend_pid()", ()) != (pid,)
        finally:
            await reads.close()

    run(main())
