"""PostgreSQL on the event loop, for the hottest statements of all: whether an access
token (or its grant) was revoked, at every introspection; and the claim of a refresh token
or code with the insert of the new refresh token, at every refresh and code redemption.

The hosted pages' views read here too, through `idp.loop_reads`; everything else in the
service reads and writes through SQLAlchemy sessions in worker threads. For these, the
hop to a worker thread and back, and SQLAlchemy's execution path, cost several times the
statements (bench/README.md, "What the profiles say"), so on PostgreSQL they run on the
event loop over a few psycopg `AsyncConnection`s in autocommit: a read is one round trip
with the latest committed data (`fetch_row` for one row and `fetch_flags` for a row of
booleans go straight through libpq); a `transaction` is BEGIN ... COMMIT (ROLLBACK if
the block raises).
SQLite (no network, no async driver) keeps the threaded paths.

The connections are opened on first use, at most `size` of them, and closed with the
application (`close`). One that fails (or whose statement was cancelled midway) is
dropped, so a database restart costs the requests in flight, not the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Engine

if TYPE_CHECKING:
    from idp.app import Services

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncDatabase:
    """A small pool of autocommit PostgreSQL connections used from one event loop."""

    def __init__(self, conninfo: str, *, size: int = 8, timeout: float = 30.0) -> None:
        self._conninfo = conninfo
        self._size = size
        #: Seconds to wait for a free connection, or to open one (as the engine's pool).
        self._timeout = timeout
        self._idle: list[Any] = []
        self._open = 0
        #: Who waits for a connection, first come first served. No lock: everything here
        #: runs on one event loop, and nothing awaits between a check and its use.
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: Statements prepared by `fetch_flags` and `fetch_row`, per connection (gone
        #: with it).
        self._prepared: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()

    @classmethod
    def for_engine(cls, engine: Engine, *, size: int = 8, timeout: float = 30.0) -> AsyncDatabase:
        """Connections to the database of `engine` (a PostgreSQL engine)."""
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), size=size, timeout=timeout)

    async def fetch_one(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> Any:
        """The first row of `sql` (psycopg's parameter style), or None."""

        async def read(connection: Any) -> Any:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchone()

        return await self._on_connection(read)

    async def fetch_flags(self, sql: str, params: Sequence[str | None]) -> tuple[bool, ...]:
        """The one row of booleans `sql` answers (`$1`-style parameters, sent as text,
        None as NULL), straight over libpq (`psycopg.pq`): prepared once per connection,
        then one message out and one wake-up per call. For the hottest read of all,
        introspection's revocation check: psycopg's cursor and its waiting machinery cost
        two and a half times as much CPU for the same round trip (bench/README.md)."""
        return await self._on_connection(
            lambda connection: _read_flags(connection, self._prepared_on(connection), sql, params)
        )

    async def fetch_row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row of `sql` (`$1`-style parameters), or None, straight over libpq as
        `fetch_flags` goes: prepared once per connection, the parameters dumped as text
        and the row loaded by psycopg's own adapters (so values come back as from a
        cursor). For the refresh's one statement, where psycopg's cursor and its waiting
        machinery were a fifth of the refresh's CPU (bench/README.md), and the pages'
        reads (`idp.loop_reads`)."""
        return await self._on_connection(
            lambda connection: _read_row(connection, self._prepared_on(connection), sql, params)
        )

    async def _on_connection(self, read: Callable[[Any], Awaitable[T]]) -> T:
        """`read(connection)` on a connection of the pool, which goes back to the pool
        after, or is dropped when `read` failed or was cancelled midway (its state is
        then unknown)."""
        import psycopg

        connection = await self._acquire()
        try:
            answer = await read(connection)
        except BaseException as exc:
            await self._discard(connection, failed=isinstance(exc, psycopg.Error))
            raise
        await self._release(connection)
        return answer

    def _prepared_on(self, connection: Any) -> set[bytes]:
        """The names of the statements `fetch_flags` and `fetch_row` prepared on
        `connection`."""
        prepared = self._prepared.get(connection)
        if prepared is None:
            prepared = self._prepared[connection] = set()
        return prepared

    def transaction(self) -> Transaction:
        """`async with db.transaction() as tx:` a transaction, committed when the block
        ends, rolled back if it raises (the exception goes on). Its BEGIN travels with
        its first statement, and its deferred statements with its COMMIT (psycopg's
        pipeline mode): two round trips for a read-then-write transaction, not four."""
        return Transaction(self)

    async def close(self) -> None:
        """Close the idle connections (at application shutdown)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            await connection.close()

    async def _acquire(self) -> Any:
        import psycopg

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while not self._idle and self._open >= self._size:
            # A plain future and a timer: `asyncio.wait_for` cost more CPU than the
            # refresh's statement when every request waited for a connection.
            waiter = loop.create_future()
            self._waiters.append(waiter)
            expiry = loop.call_at(deadline, _time_out, waiter)
            try:
                await waiter
            except BaseException:
                self._forget(waiter)
                raise
            finally:
                expiry.cancel()
        if self._idle:
            return self._idle.pop()
        self._open += 1
        try:
            return await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._conninfo, autocommit=True),
                max(0.0, deadline - loop.time()),
            )
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        """`waiter` gives up (timed out, or its request cancelled): out of the queue, and
        if it had been woken already, the turn goes to the next one."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._wake()
            return
        with contextlib.suppress(ValueError):  # `_wake` may have passed over it
            self._waiters.remove(waiter)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _release(self, connection: Any) -> None:
        self._idle.append(connection)
        self._wake()

    async def _discard(self, connection: Any, *, failed: bool) -> None:
        if failed:
            log.warning("dropping a failed database connection of the event-loop pool")
        self._open -= 1
        self._wake()
        try:
            await connection.close()
        except Exception:
            log.debug("closing a failed connection failed too", exc_info=True)


async def _read_flags(
    connection: Any, prepared: set[bytes], sql: str, params: Sequence[str | None]
) -> tuple[bool, ...]:
    """`AsyncDatabase.fetch_flags` on one connection of the pool (idle, in autocommit)."""
    from psycopg import OperationalError, pq

    pgconn = connection.pgconn
    name = await _prepare(pgconn, prepared, sql)
    pgconn.send_query_prepared(name, [None if p is None else p.encode() for p in params])
    result = await _result(pgconn)
    if result.status != pq.ExecStatus.TUPLES_OK or result.ntuples != 1:
        raise OperationalError(_message(result) or f"{result.ntuples} rows, not one")
    values = [result.get_value(0, column) for column in range(result.nfields)]
    if any(value not in (b"t", b"f") for value in values):
        raise ValueError(f"not a row of booleans: {values!r}")
    return tuple(value == b"t" for value in values)


async def _read_row(
    connection: Any, prepared: set[bytes], sql: str, params: Sequence[Any]
) -> tuple[Any, ...] | None:
    """`AsyncDatabase.fetch_row` on one connection of the pool (idle, in autocommit)."""
    from psycopg import OperationalError, pq
    from psycopg.adapt import PyFormat, Transformer

    pgconn = connection.pgconn
    name = await _prepare(pgconn, prepared, sql)
    adapt = Transformer(connection)
    pgconn.send_query_prepared(name, adapt.dump_sequence(params, [PyFormat.TEXT] * len(params)))
    result = await _result(pgconn)
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise OperationalError(_message(result))
    if result.ntuples == 0:
        return None
    adapt.set_pgresult(result)
    row: tuple[Any, ...] = adapt.load_row(0, tuple)
    return row


async def _prepare(pgconn: Any, prepared: set[bytes], sql: str) -> bytes:
    """The name of `sql` prepared on `pgconn`, preparing it the first time."""
    from psycopg import OperationalError, pq

    name = _statement_name(sql)
    if name not in prepared:
        pgconn.send_prepare(name, sql.encode())
        result = await _result(pgconn)
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise OperationalError(_message(result))
        prepared.add(name)
    return name


@functools.lru_cache(maxsize=64)
def _statement_name(sql: str) -> bytes:
    """The name `sql` is prepared under (apart from psycopg's own `_pg3_`)."""
    return b"idp_" + hashlib.blake2b(sql.encode(), digest_size=12).hexdigest().encode()


async def _result(pgconn: Any) -> Any:
    """Send what libpq holds, wait for the command's result and return it, leaving the
    connection idle (every result read)."""
    loop = asyncio.get_running_loop()
    while pgconn.flush():  # 1: the socket's buffer is full, the rest waits
        await _ready(loop, pgconn.socket, write=True)
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        await _ready(loop, pgconn.socket, write=False)
    result = pgconn.get_result()
    while pgconn.get_result() is not None:  # a command's results end with None
        pass
    if result is None:
        raise RuntimeError("libpq answered no result")
    return result


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    ready = loop.create_future()
    if write:
        loop.add_writer(fd, _set_ready, ready)
    else:
        loop.add_reader(fd, _set_ready, ready)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _set_ready(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _message(result: Any) -> str:
    return bytes(result.error_message or b"").decode("utf-8", "replace").strip()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Transaction:
    """One transaction of `AsyncDatabase.transaction` (a class, not a generator-based
    context manager: this is on the hottest path)."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._database = database
        self._connection: Any = None
        self._deferred: list[tuple[str, Sequence[Any] | dict[str, Any]]] = []
        self.begun = False

    async def __aenter__(self) -> Transaction:
        self._connection = await self._database._acquire()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                await self._commit()
            except BaseException as failed:
                await self._abandon(failed)
                raise
            await self._database._release(self._connection)
            return
        await self._abandon(exc)  # and the exception goes on

    async def fetch_one(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> Any:
        """The first row of `sql`, or None (the first statement carries the BEGIN)."""
        if self.begun:
            cursor = await self._connection.execute(sql, params)
            return await cursor.fetchone()
        async with self._connection.pipeline() as pipeline:
            await self._connection.execute("BEGIN")
            self.begun = True
            cursor = await self._connection.execute(sql, params)
            await pipeline.sync()
        return await cursor.fetchone()

    async def fetch_all(
        self, *statements: tuple[str, Sequence[Any] | dict[str, Any]]
    ) -> list[list[Any]]:
        """Every row of each of `statements` (each must return rows), sent together: one
        round trip (with the BEGIN, if none was sent yet)."""
        async with self._connection.pipeline() as pipeline:
            if not self.begun:
                await self._connection.execute("BEGIN")
                self.begun = True
            cursors = [await self._connection.execute(sql, params) for sql, params in statements]
            await pipeline.sync()
        return [await cursor.fetchall() for cursor in cursors]

    def defer(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> None:
        """Send `sql` with the COMMIT (its failure fails the commit, and the block)."""
        self._deferred.append((sql, params))

    async def _commit(self) -> None:
        if not self.begun:
            if not self._deferred:
                return
            self._deferred.insert(0, ("BEGIN", ()))
            self.begun = True
        async with self._connection.pipeline():
            for sql, params in self._deferred:
                await self._connection.execute(sql, params)
            await self._connection.execute("COMMIT")
        self._deferred.clear()
        self.begun = False

    async def _abandon(self, exc: BaseException) -> None:
        """Roll back and give the connection back, or drop it when its state is unknown."""
        import psycopg

        connection = self._connection
        broken = isinstance(exc, psycopg.Error | asyncio.CancelledError) or connection.broken
        if not broken and self.begun:
            try:
                await connection.execute("ROLLBACK")
            except psycopg.Error:
                broken = True
        if broken:
            await self._database._discard(connection, failed=isinstance(exc, psycopg.Error))
        else:
            await self._database._release(connection)  # rolled back, clean


def async_db(services: Services) -> AsyncDatabase:
    """The process's `AsyncDatabase` (PostgreSQL), made on first use, closed by the app."""
    existing = services.extras.get("async_db")
    if existing is not None:  # only this function puts it there
        return cast("AsyncDatabase", existing)
    reads = AsyncDatabase.for_engine(services.engine)
    services.extras["async_db"] = reads
    return reads
