"""Failure budgets, backend specifics: the SQLite sidecar, PostgreSQL connections, Redis
expiry and outage, purging, and the choice of backend."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from idp import migrations
from idp.accounts import throttle_db
from idp.accounts.throttle import make_throttle
from idp.accounts.throttle_db import DatabaseThrottle
from idp.accounts.throttle_redis import RedisThrottle
from idp.app import Services, build_services
from idp.db import make_engine
from idp.models import FailureCounter
from idp.settings import Settings
from tests.accounts._throttle_harness import NOW, redis_or_skip, redis_url
from tests.accounts._throttle_harness import check as _check
from tests.accounts._throttle_harness import fail as _fail

# --- backend specifics -------------------------------------------------------------------------


def test_sqlite_counts_while_the_request_holds_the_write_lock(tmp_path: Path) -> None:
    """A sign-in request that has already written in its transaction records a failure
    without waiting on its own lock (the reason for the SQLite sidecar)."""
    url = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    services = build_services(Settings(database_url=url))
    migrations.upgrade(services.engine)
    throttle = make_throttle(services)
    assert make_throttle(services) is throttle
    assert isinstance(throttle, DatabaseThrottle)
    try:
        with services.engine.connect() as request_connection:
            request = request_connection.begin()
            # The request's first write takes the database's write lock until it ends.
            request_connection.execute(
                text(
                    "INSERT INTO audit_events (at, event, detail) VALUES ('2026-01-01', 'x', '{}')"
                )
            )
            _fail(throttle, at=NOW, ip="192.0.2.1")
            request.rollback()
        assert Path(f"{tmp_path / 'idp.sqlite3'}-throttle").stat().st_size > 0
        with throttle.engine.connect() as connection:
            counted = connection.execute(
                select(FailureCounter.failures).where(
                    FailureCounter.key == "password:account:acc-1"
                )
            ).scalar_one()
        assert counted == 1  # the count stands although the request rolled back
    finally:
        throttle.dispose()
        services.engine.dispose()


def test_redis_counters_that_are_forgotten_also_expire() -> None:
    client = redis_or_skip()
    prefix = f"test:{secrets.token_hex(6)}:"
    t = RedisThrottle.from_url(redis_url(), prefix=prefix)
    try:
        _fail(t, at=NOW, ip="192.0.2.1")
        assert client.ttl(f"{prefix}password:account:acc-1") == -1  # never expires
        assert 0 < client.ttl(f"{prefix}password:pair:acc-1:192.0.2.1") <= 24 * 3600 + 300
        assert 0 < client.ttl(f"{prefix}password:ip:192.0.2.1") <= 3600 + 300
    finally:
        doomed = list(client.scan_iter(f"{prefix}*"))
        if doomed:
            client.delete(*doomed)
        t.dispose()
        client.close()


def test_redis_unreachable_fails_closed() -> None:
    t = RedisThrottle.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(redis.ConnectionError):
        t.check(kind="password", account_id="acc-1", ip="192.0.2.1", now=NOW)
    t.dispose()


def test_make_throttle_uses_redis_when_configured(tmp_path: Path) -> None:
    redis_or_skip()
    services = build_services(
        Settings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", redis_url=redis_url())
    )
    try:
        throttle = make_throttle(services)
        assert isinstance(throttle, RedisThrottle)
        assert services.extras["throttle"] is throttle
        throttle.dispose()
    finally:
        services.engine.dispose()


def test_database_purge_deletes_only_forgotten_source_and_pair_counters(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No purge by chance while failing (one failure in PURGE_ONE_IN): only the ones below.
    monkeypatch.setattr(throttle_db, "PURGE_ONE_IN", 10**9)
    throttle = make_throttle(services)
    assert isinstance(throttle, DatabaseThrottle)
    try:
        _fail(throttle, at=NOW, ip="192.0.2.1")  # account, pair and source counters
        _fail(throttle, at=NOW + dt.timedelta(hours=23, minutes=30), account=None, ip="192.0.2.2")
        assert throttle.purge_forgotten(now=NOW + dt.timedelta(minutes=59)) == 0
        # An hour on, the first source counter no longer counts; the pair's day is not over.
        assert throttle.purge_forgotten(now=NOW + dt.timedelta(hours=1)) == 1
        assert throttle.purge_forgotten(now=NOW + dt.timedelta(days=1)) == 1
        with throttle.engine.connect() as connection:
            left = set(connection.execute(select(FailureCounter.key)).scalars())
        assert left == {"password:account:acc-1", "password:ip:192.0.2.2"}
    finally:
        throttle.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_throttle_never_waits_on_the_services_pool(database_url: str) -> None:
    """A request holding the pool's last connection can still check and record."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=2)
    throttle = DatabaseThrottle.for_engine(engine)
    try:
        with engine.connect() as held:
            held.execute(text("SELECT 1"))
            _fail(throttle, at=NOW, ip="192.0.2.1")
            assert _check(throttle, at=NOW, ip="192.0.2.1").allowed
        with engine.connect() as connection:
            counted = connection.execute(
                select(FailureCounter.failures).where(
                    FailureCounter.key == "password:account:acc-1"
                )
            ).scalar_one()
            assert counted == 1
            connection.execute(text("DELETE FROM failure_counters"))
            connection.commit()
    finally:
        throttle.dispose()
        engine.dispose()
