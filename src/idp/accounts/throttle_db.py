"""Failure budgets in the database (`failure_counters`), for deployments without Redis.

Every failure is one atomic upsert (`INSERT ... ON CONFLICT (key) DO UPDATE SET failures =
failures + 1`, or 1 when the old count is forgotten), so concurrent requests in any number
of processes never lose a count. Each call commits in its own short transaction: a count
must stand even if the request that made it later fails.

SQLite allows one writer at a time, and a sign-in request may already hold the write lock
in its own transaction when it records a failure; a second connection to the same file
would wait for that lock forever (until the busy timeout). So on SQLite the counters live
in a sidecar file beside the database (`<database>-throttle`), still shared by every
process on the machine. PostgreSQL uses the migrated `failure_counters` table itself,
through connections of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    Dialect,
    Engine,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    column,
    create_engine,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.schema import CreateTable

from idp.accounts.throttle import (
    KINDS,
    PAIR,
    SOURCE,
    Budget,
    Counter,
    Verdict,
    judge,
    keys_for,
)
from idp.db import POOL_RECYCLE_SECONDS, driver_sql, make_engine, read_only
from idp.models import FailureCounter

#: Connections the throttle keeps open to PostgreSQL (it holds one only for a statement).
THROTTLE_POOL_SIZE = 4
#: One failure in this many also deletes forgotten counters.
PURGE_ONE_IN = 500

_TABLE: Table = FailureCounter.__table__  # type: ignore[assignment]
#: `check`'s read, built once (and its cache key with it): the keys are one expanding
#: parameter.
_CHECK = select(_TABLE.c.key, _TABLE.c.failures, _TABLE.c.last_failure_at).where(
    _TABLE.c.key.in_(bindparam("keys", expanding=True))
)


#: `_CHECK` with the keys as one array, for the driver directly (`check_statement`).
_CHECK_ANY = select(_TABLE.c.key, _TABLE.c.failures, _TABLE.c.last_failure_at).where(
    _TABLE.c.key == any_(bindparam("keys", type_=ARRAY(String)))
)
#: The same on SQLite, which has no arrays: the keys as one JSON array.
_CHECK_JSON = select(_TABLE.c.key, _TABLE.c.failures, _TABLE.c.last_failure_at).where(
    _TABLE.c.key.in_(
        select(column("value")).select_from(func.json_each(bindparam("keys", type_=JSON)))
    )
)


def verdict_of(
    keys: Sequence[tuple[str, Budget]], rows: Iterable[Sequence[Any]], *, now: dt.datetime
) -> Verdict:
    """The verdict on an attempt charged to `keys` (`keys_for`), given the counters read
    of them (rows of key, failures and time of the last failure, in any order)."""
    counters = {key: Counter(failures, last) for key, failures, last in rows}
    verdict = judge(((budget, counters.get(key)) for key, budget in keys), now=now)
    resettable = any(budget.reset_on_success and key in counters for key, budget in keys)
    return dataclasses.replace(verdict, resettable=resettable)


def check_statement(
    dialect: Dialect, *, kind: str, account_id: str | None, ip: str | None
) -> tuple[list[tuple[str, Budget]], tuple[str, dict[str, Any]]]:
    """`DatabaseThrottle.check`'s read as driver SQL and parameters, with the keys it
    reads, for the POSTs on the event loop (`idp.web.pages.code_on_loop`,
    `password_on_loop`), which judge the counters with `verdict_of`. On SQLite it reads
    the sidecar file (`DatabaseThrottle.for_engine`)."""
    keys = keys_for(kind, account_id=account_id, ip=ip)
    check = _CHECK_JSON if dialect.name == "sqlite" else _CHECK_ANY
    return keys, (driver_sql(dialect, check)[0], {"keys": [key for key, _ in keys]})


class DatabaseThrottle:
    """The `Throttle` over a SQL database (PostgreSQL, or a SQLite sidecar file)."""

    def __init__(self, engine: Engine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        #: The same pool for `check`, which only reads: on PostgreSQL in autocommit (the
        #: SELECT alone, no BEGIN and ROLLBACK round trips), on SQLite a deferred read
        #: that does not take the write lock.
        self._reader = read_only(engine)
        self._owns_engine = owns_engine

    @classmethod
    def for_engine(cls, engine: Engine) -> DatabaseThrottle:
        """The throttle for the service's database (a sidecar file on SQLite)."""
        if engine.dialect.name != "sqlite":
            # A small pool of its own, outside the service's pool: a request holds one of
            # the pool's connections while it checks or records, and must never wait for a
            # second from the same pool (a busy server would have every connection held by
            # a request doing just that). Pooled, not a new connection per check: opening
            # a PostgreSQL connection (and its backend) cost more CPU than the check, on
            # every password and code POST (bench/README.md, sign-in profile).
            url = engine.url.render_as_string(hide_password=False)
            return cls(
                create_engine(
                    url,
                    pool_size=THROTTLE_POOL_SIZE,
                    max_overflow=THROTTLE_POOL_SIZE,
                    pool_recycle=POOL_RECYCLE_SECONDS,
                ),
                owns_engine=True,
            )
        database = engine.url.database
        if not database or database == ":memory:":
            return cls(engine)  # one process only; nothing else could share a sidecar
        sidecar = make_engine(engine.url.set(database=f"{database}-throttle").render_as_string())
        with sidecar.begin() as connection:
            connection.execute(CreateTable(_TABLE, if_not_exists=True))
        return cls(sidecar, owns_engine=True)

    def dispose(self) -> None:
        """Close the throttle's own connections (the service's engine is left alone)."""
        if self._owns_engine:
            self.engine.dispose()

    def check(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> Verdict:
        """May an attempt go ahead now? One indexed read of at most three rows."""
        keys = keys_for(kind, account_id=account_id, ip=ip)
        if not keys:
            return Verdict(allowed=True)
        with self._reader.connect() as connection:
            rows = connection.execute(_CHECK, {"keys": [key for key, _ in keys]}).all()
        return verdict_of(keys, rows, now=now)

    def record_failure(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> None:
        """Add one failure to each counter the attempt is charged to."""
        keys = keys_for(kind, account_id=account_id, ip=ip)
        with self.engine.begin() as connection:
            for key, budget in keys:
                connection.execute(self._increment(key, budget, now))
        if secrets.randbelow(PURGE_ONE_IN) == 0:
            # Now and then, not on a schedule: no job runner is needed, and the cost is
            # spread over failures, which are what create rows in the first place.
            self.purge_forgotten(now=now)

    def record_success(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> None:
        """A success resets the account's counters (not the source's: see `throttle`)."""
        del now
        keys = [k for k, b in keys_for(kind, account_id=account_id, ip=ip) if b.reset_on_success]
        if keys:
            with self.engine.begin() as connection:
                connection.execute(delete(_TABLE).where(_TABLE.c.key.in_(keys)))

    def reset_account(self, *, account_id: str, kinds: Sequence[str] = KINDS) -> None:
        """Clear the account's counters of `kinds`, from every source."""
        conditions = []
        for kind in kinds:
            conditions.append(_TABLE.c.key == f"{kind}:account:{account_id}")
            conditions.append(
                _TABLE.c.key.startswith(f"{kind}:pair:{account_id}:", autoescape=True)
            )
        with self.engine.begin() as connection:
            connection.execute(delete(_TABLE).where(or_(*conditions)))

    def purge_forgotten(self, *, now: dt.datetime) -> int:
        """Delete counters whose failures no longer count (source and pair counters after
        their quiet period); returns how many. Account counters are never purged."""
        conditions = []
        for budget in (PAIR, SOURCE):
            assert budget.forget_after is not None
            cutoff = now - dt.timedelta(seconds=budget.forget_after)
            for kind in KINDS:
                conditions.append(
                    and_(
                        _TABLE.c.key.startswith(f"{kind}:{budget.scope}:", autoescape=True),
                        _TABLE.c.last_failure_at <= cutoff,
                    )
                )
        with self.engine.begin() as connection:
            result = connection.execute(delete(_TABLE).where(or_(*conditions)))
        return int(result.rowcount or 0)

    def _increment(self, key: str, budget: Budget, now: dt.datetime) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        else:
            raise RuntimeError(f"no upsert for {self.engine.dialect.name}")
        failures: Any = _TABLE.c.failures + 1
        if budget.forget_after is not None:
            forget_before = now - dt.timedelta(seconds=budget.forget_after)
            failures = case((_TABLE.c.last_failure_at <= forget_before, 1), else_=failures)
        return (
            insert(_TABLE)
            .values(key=key, failures=1, last_failure_at=now, blocked_until=None)
            .on_conflict_do_update(
                index_elements=[_TABLE.c.key],
                set_={"failures": failures, "last_failure_at": now},
            )
        )
