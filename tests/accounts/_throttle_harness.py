"""The failure-budget test harness: one throttle per backend, and raw counter access.

The database backend runs on SQLite (its sidecar file) and PostgreSQL; the Redis backend
against the real Redis (`IDP_TEST_REDIS_URL`, default database 15), skipped with a reason
when Redis is unreachable unless `IDP_TEST_REQUIRE_REDIS=1`. Every run uses its own key
prefix and deletes its keys afterwards, so parallel runs never collide.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from idp import migrations
from idp.accounts.throttle import Throttle, Verdict, make_throttle
from idp.accounts.throttle_db import DatabaseThrottle
from idp.accounts.throttle_redis import RedisThrottle
from idp.app import build_services
from idp.db import make_engine
from idp.models import FailureCounter
from idp.settings import Settings

NOW = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)
REDIS_ENV = "IDP_TEST_REDIS_URL"
REQUIRE_REDIS_ENV = "IDP_TEST_REQUIRE_REDIS"


def redis_url() -> str:
    return os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/15")


@dataclass
class Harness:
    """A throttle and a way to read its raw counters."""

    throttle: Throttle
    failures: Callable[[str], int | None]
    keys: Callable[[], set[str]]
    make_another: Callable[[], Throttle]  # same store, separate connections ("process")


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(redis_url(), socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get(REQUIRE_REDIS_ENV) == "1":
            pytest.fail(f"Redis at {redis_url()} is unreachable but {REQUIRE_REDIS_ENV}=1: {exc}")
        pytest.skip(f"Redis at {redis_url()} is unreachable: {exc}")
    return client


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str | None
) -> Iterator[Harness]:
    """The throttle on each backend, emptied afterwards."""
    if request.param == "redis":
        client = redis_or_skip()
        prefix = f"test:{secrets.token_hex(6)}:"
        made: list[RedisThrottle] = []

        def another() -> Throttle:
            made.append(RedisThrottle.from_url(redis_url(), prefix=prefix))
            return made[-1]

        def failures(key: str) -> int | None:
            value = client.hget(prefix + key, "n")
            return None if value is None else int(value)

        def keys() -> set[str]:
            return {k.decode().removeprefix(prefix) for k in client.scan_iter(f"{prefix}*")}

        try:
            yield Harness(another(), failures, keys, another)
        finally:
            doomed = list(client.scan_iter(f"{prefix}*"))
            if doomed:
                client.delete(*doomed)
            for throttle in made:
                throttle.dispose()
            client.close()
        return

    if request.param == "postgresql":
        if postgres_database is None:
            pytest.skip("PostgreSQL not configured: set IDP_TEST_DATABASE_URL")
        url = postgres_database
    else:
        url = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    services = build_services(Settings(database_url=url))
    migrations.upgrade(services.engine)
    throttle = make_throttle(services)
    assert isinstance(throttle, DatabaseThrottle)
    others: list[DatabaseThrottle] = []

    def another_db() -> Throttle:
        others.append(DatabaseThrottle.for_engine(make_engine(url)))
        return others[-1]

    def db_failures(key: str) -> int | None:
        with throttle.engine.connect() as connection:
            return connection.execute(
                select(FailureCounter.failures).where(FailureCounter.key == key)
            ).scalar_one_or_none()

    def db_keys() -> set[str]:
        with throttle.engine.connect() as connection:
            return set(connection.execute(select(FailureCounter.key)).scalars())

    try:
        yield Harness(throttle, db_failures, db_keys, another_db)
    finally:
        with throttle.engine.begin() as connection:
            connection.execute(text("DELETE FROM failure_counters"))
        for other in others:
            other.dispose()
        throttle.dispose()
        services.engine.dispose()


def fail(t: Throttle, *, at: dt.datetime, account: str | None = "acc-1", ip: str | None) -> None:
    t.record_failure(kind="password", account_id=account, ip=ip, now=at)


def check(
    t: Throttle, *, at: dt.datetime, account: str | None = "acc-1", ip: str | None
) -> Verdict:
    return t.check(kind="password", account_id=account, ip=ip, now=at)


def address(n: int) -> str:
    return f"198.51.100.{n % 250}" if n < 250 else f"203.0.113.{n % 250}"
