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
the block raises), its statements pipelined over libpq too.
On SQLite (no network, no async driver) the sign-in's transactions go to
`idp.loop_sqlite.SqliteOnLoop` instead, which has the same methods.

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
import re
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
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

    async def fetch_all(
        self, *statements: tuple[str, Sequence[Any] | Mapping[str, Any]]
    ) -> list[list[tuple[Any, ...]]]:
        """Every row of each of `statements` (psycopg's parameter style; none for one
        that returns no rows), sent together outside a transaction: one round trip over
        libpq's pipeline mode, as a `transaction`'s statements go, without its BEGIN and
        COMMIT. For reads that need no snapshot in common, and for a single statement
        that is atomic by itself (a data-modifying WITH)."""

        async def send(connection: Any) -> list[list[tuple[Any, ...]]]:
            commands, adapt = _commands(connection, list(statements))
            prepared = self._prepared_on(connection)
            return await _pipeline(connection, prepared, commands, adapt, begin=False, commit=False)

        return await self._on_connection(send)

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
        its first statement, and its deferred statements with its COMMIT (libpq's
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
    context manager: this is on the hottest path).

    Its statements go over libpq's pipeline mode directly (`_pipeline`), as `fetch_row`
    goes for one: each prepared once per connection (under its parameters' types, as
    psycopg's cursor prepares it), its parameters dumped and its rows loaded by psycopg's
    own adapters, so values come and go as through a cursor. psycopg's cursors and
    pipeline object cost about twice the client CPU for the same round trips
    (bench/README.md)."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._database = database
        self._connection: Any = None
        self._deferred: list[tuple[str, Sequence[Any] | Mapping[str, Any]]] = []
        self.begun = False
        #: A pipeline failed or was interrupted: the connection is dropped, not given back.
        self._unsettled = False

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

    async def fetch_one(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> Any:
        """The first row of `sql` (psycopg's parameter style), or None (the first
        statement carries the BEGIN)."""
        (rows,) = await self._send([(sql, params)], commit=False)
        return rows[0] if rows else None

    async def fetch_all(
        self, *statements: tuple[str, Sequence[Any] | Mapping[str, Any]]
    ) -> list[list[tuple[Any, ...]]]:
        """Every row of each of `statements` (none for one that returns no rows), sent
        together: one round trip (with the BEGIN, if none was sent yet)."""
        return await self._send(list(statements), commit=False)

    def defer(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> None:
        """Send `sql` with the COMMIT (its failure fails the commit, and the block)."""
        self._deferred.append((sql, params))

    async def _commit(self) -> None:
        if self.begun or self._deferred:
            await self._send(self._deferred, commit=True)
            self._deferred.clear()

    async def _send(
        self, statements: list[tuple[str, Sequence[Any] | Mapping[str, Any]]], *, commit: bool
    ) -> list[list[tuple[Any, ...]]]:
        connection = self._connection
        # Every value is dumped before anything is sent: one that cannot be raises here,
        # with the connection as it was.
        commands, adapt = _commands(connection, statements)
        self._unsettled = True  # until the pipeline has answered, and answered well
        rows = await _pipeline(
            connection,
            self._database._prepared_on(connection),
            commands,
            adapt,
            begin=not self.begun,
            commit=commit,
        )
        self._unsettled = False
        self.begun = not commit
        return rows

    async def _abandon(self, exc: BaseException) -> None:
        """After an error of the block's own (the caller's, or a value that could not be
        dumped), roll back and give the connection back. After one of a statement's, or
        a pipeline interrupted (cancelled, the connection lost), drop the connection: its
        state is unknown, or its transaction failed."""
        import psycopg

        connection = self._connection
        broken = self._unsettled or connection.broken
        if not broken and self.begun:
            try:
                broken = not await _rolled_back(connection.pgconn)
            except BaseException:
                await self._database._discard(connection, failed=True)
                raise
        if broken:
            await self._database._discard(connection, failed=isinstance(exc, psycopg.Error))
        else:
            await self._database._release(connection)  # rolled back, clean


#: One statement of a pipeline: its prepared name, its SQL with `$n` parameters, their
#: types and their values as text.
_Command = tuple[bytes, bytes, tuple[int, ...], Sequence[Any]]


def _commands(
    connection: Any, statements: list[tuple[str, Sequence[Any] | Mapping[str, Any]]]
) -> tuple[list[_Command], Any]:
    """`statements` ready to send, and the adapters that dumped them (which load the
    rows)."""
    from psycopg.adapt import PyFormat, Transformer

    adapt = Transformer(connection)
    commands: list[_Command] = []
    for sql, params in statements:
        query, names = _numbered(sql)
        if names is None:
            values = list(cast("Sequence[Any]", params))
        else:
            values = [cast("Mapping[str, Any]", params)[name] for name in names]
        dumped = adapt.dump_sequence(values, [PyFormat.TEXT] * len(values))
        types = tuple(adapt.types or ())
        commands.append((_prepared_name(sql, types), query, types, dumped))
    return commands, adapt


async def _pipeline(
    connection: Any,
    prepared: set[bytes],
    commands: list[_Command],
    adapt: Any,
    *,
    begin: bool,
    commit: bool,
) -> list[list[tuple[Any, ...]]]:
    """`commands` in one round trip over libpq's pipeline mode (with a BEGIN before them
    and a COMMIT after, if asked), each prepared first on a connection that has not yet
    prepared it; the rows of each. An error of any raises psycopg's error for it (the
    ones after it were not run)."""
    from psycopg import OperationalError, errors, pq

    pgconn = connection.pgconn
    preparing: list[bytes] = []
    rows_of: list[bool] = []  # per command sent: are its rows the caller's?
    pgconn.enter_pipeline_mode()
    if begin:
        pgconn.send_query_params(b"BEGIN", None)
        rows_of.append(False)
    for name, query, types, values in commands:
        if name not in prepared and name not in preparing:
            pgconn.send_prepare(name, query, param_types=types)
            preparing.append(name)
            rows_of.append(False)
        pgconn.send_query_prepared(name, values)
        rows_of.append(True)
    if commit:
        pgconn.send_query_params(b"COMMIT", None)
        rows_of.append(False)
    pgconn.pipeline_sync()
    results = await _pipeline_results(pgconn)
    pgconn.exit_pipeline_mode()
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise errors.error_from_result(result, encoding=connection.info.encoding)
    if len(results) != len(rows_of):
        raise OperationalError(f"{len(results)} results for {len(rows_of)} commands")
    prepared.update(preparing)
    answers: list[list[tuple[Any, ...]]] = []
    for result, wanted in zip(results, rows_of, strict=True):
        if not wanted:
            continue
        if result.status != pq.ExecStatus.TUPLES_OK:
            answers.append([])
            continue
        adapt.set_pgresult(result)
        answers.append(adapt.load_rows(0, result.ntuples, tuple))
    return answers


async def _pipeline_results(pgconn: Any) -> list[Any]:
    """Send what libpq holds and read the pipeline's results up to its sync point: one
    per command (each command's results end with None, which is passed over)."""
    from psycopg import pq

    loop = asyncio.get_running_loop()
    while pgconn.flush():  # 1: the socket's buffer is full, the rest waits
        await _ready(loop, pgconn.socket, write=True)
    results: list[Any] = []
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            results.append(result)
        await _ready(loop, pgconn.socket, write=False)


async def _rolled_back(pgconn: Any) -> bool:
    """ROLLBACK on an idle connection in a transaction; whether it answered as it should."""
    from psycopg import pq

    pgconn.send_query_params(b"ROLLBACK", None)
    result = await _result(pgconn)
    return bool(result.status == pq.ExecStatus.COMMAND_OK)


#: psycopg's placeholders: `%(name)s`, `%s`, and `%%` for a literal `%`.
_PLACEHOLDER = re.compile(r"%(?:\((\w+)\)s|s|%)")


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> tuple[bytes, tuple[str, ...] | None]:
    """`sql` in psycopg's parameter style as libpq takes it (`$1`, `$2`, ...), and the
    names of its parameters in that order (None when they are positional, `%s`)."""
    names: dict[str, int] = {}
    positional = 0

    def number(match: re.Match[str]) -> str:
        nonlocal positional
        text, name = match.group(0), match.group(1)
        if text == "%%":
            return "%"
        if name is None:
            positional += 1
            return f"${positional}"
        return f"${names.setdefault(name, len(names) + 1)}"

    query = _PLACEHOLDER.sub(number, sql)
    if names and positional:
        raise ValueError("named and positional parameters in one statement")
    return query.encode(), (tuple(names) if names or not positional else None)


@functools.lru_cache(maxsize=256)
def _prepared_name(sql: str, types: tuple[int, ...]) -> bytes:
    """The name a transaction's statement is prepared under, for its parameters' types
    (psycopg's own cursor prepares by both, too)."""
    return _statement_name(f"{sql}\x00{types}")


def async_db(services: Services) -> AsyncDatabase:
    """The process's `AsyncDatabase` (PostgreSQL), made on first use, closed by the app."""
    existing = services.extras.get("async_db")
    if existing is not None:  # only this function puts it there
        return cast("AsyncDatabase", existing)
    reads = AsyncDatabase.for_engine(services.engine)
    services.extras["async_db"] = reads
    return reads
