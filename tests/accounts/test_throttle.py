"""Failure budgets on every backend: delays, hard stop, separation of kinds and sources,
no lock-out at an attacker's will, and counts that survive racing processes.

The database backend runs on SQLite (its sidecar file) and PostgreSQL; the Redis backend
against the real Redis (`IDP_TEST_REDIS_URL`, default database 15), skipped with a reason
when Redis is unreachable unless `IDP_TEST_REQUIRE_REDIS=1`.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from idp import migrations
from idp.accounts import throttle as policy
from idp.accounts.throttle import ACCOUNT, PAIR, SOURCE, Throttle, Verdict, make_throttle
from idp.accounts.throttle_db import DatabaseThrottle
from idp.accounts.throttle_redis import RedisThrottle
from idp.app import Services, build_services
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


def _redis_or_skip() -> redis.Redis:
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
        client = _redis_or_skip()
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


def _fail(t: Throttle, *, at: dt.datetime, account: str | None = "acc-1", ip: str | None) -> None:
    t.record_failure(kind="password", account_id=account, ip=ip, now=at)


def _check(
    t: Throttle, *, at: dt.datetime, account: str | None = "acc-1", ip: str | None
) -> Verdict:
    return t.check(kind="password", account_id=account, ip=ip, now=at)


def _ip(n: int) -> str:
    return f"198.51.100.{n % 250}" if n < 250 else f"203.0.113.{n % 250}"


# --- pure rules --------------------------------------------------------------------------------


def test_account_delays_are_none_for_five_then_double_to_a_fifteen_minute_cap() -> None:
    assert [ACCOUNT.delay(n) for n in range(5)] == [0] * 5
    assert [ACCOUNT.delay(n) for n in range(5, 16)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900]
    assert ACCOUNT.delay(99) == ACCOUNT.delay(10_000) == 900
    assert ACCOUNT.hard_stop == 100  # NIST 800-63B 5.2.2


def test_a_single_source_is_stopped_well_before_one_hundred() -> None:
    assert PAIR.hard_stop is not None
    assert ACCOUNT.hard_stop is not None
    assert PAIR.hard_stop * 4 < ACCOUNT.hard_stop
    assert not SOURCE.reset_on_success


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7 ", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("testclient", "testclient"),
        ("x" * 500, "x" * 64),
    ],
)
def test_source_key_groups_ipv6_by_slash_64(ip: str, key: str) -> None:
    assert policy.source_key(ip) == key


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown failure budget"):
        policy.keys_for("pin", account_id="a", ip="192.0.2.1")


def test_unknown_accounts_are_charged_to_the_source_only() -> None:
    assert [k for k, _ in policy.keys_for("password", account_id=None, ip="192.0.2.1")] == [
        "password:ip:192.0.2.1"
    ]
    assert policy.keys_for("code", account_id=None, ip=None) == []


# --- behaviour on every backend --------------------------------------------------------------


def test_first_five_failures_cost_nothing_then_delays_grow(harness: Harness) -> None:
    t, at = harness.throttle, NOW
    for n in range(5):
        assert _check(t, at=at, ip=_ip(n)).allowed
        _fail(t, at=at, ip=_ip(n))
    for n, expected_delay in enumerate([1, 2, 4, 8], start=5):
        verdict = _check(t, at=at, ip=_ip(n))
        assert verdict == Verdict(allowed=False, retry_after=expected_delay)
        # Refused until exactly the delay has passed, from any source.
        assert not _check(t, at=at + dt.timedelta(seconds=expected_delay - 0.5), ip=_ip(99)).allowed
        at += dt.timedelta(seconds=expected_delay)
        assert _check(t, at=at, ip=_ip(n)).allowed
        _fail(t, at=at, ip=_ip(n))
    assert harness.failures("password:account:acc-1") == 9


def test_success_resets_the_account_but_not_the_source(harness: Harness) -> None:
    t = harness.throttle
    for _ in range(7):
        _fail(t, at=NOW, ip="192.0.2.1")
    assert not _check(t, at=NOW, ip="192.0.2.1").allowed
    t.record_success(kind="password", account_id="acc-1", ip="192.0.2.1", now=NOW)
    assert _check(t, at=NOW, ip="192.0.2.1").allowed
    assert harness.failures("password:account:acc-1") is None
    assert harness.failures("password:pair:acc-1:192.0.2.1") is None
    # An attacker must not clear a spraying source by signing in to their own account.
    assert harness.failures("password:ip:192.0.2.1") == 7


def test_password_and_code_budgets_are_separate(harness: Harness) -> None:
    t = harness.throttle
    for _ in range(8):
        _fail(t, at=NOW, ip="192.0.2.1")
    assert not _check(t, at=NOW, ip="192.0.2.1").allowed
    assert t.check(kind="code", account_id="acc-1", ip="192.0.2.1", now=NOW).allowed
    t.record_success(kind="code", account_id="acc-1", ip="192.0.2.1", now=NOW)
    assert not _check(t, at=NOW, ip="192.0.2.1").allowed


def test_hard_stop_at_one_hundred_needs_support(harness: Harness) -> None:
    """NIST 800-63B 5.2.2: no more than 100 consecutive failures; waiting does not help."""
    t, at = harness.throttle, NOW
    for n in range(100):
        verdict = _check(t, at=at, ip=_ip(n))
        assert verdict.allowed, (n, verdict)
        _fail(t, at=at, ip=_ip(n))
        at += dt.timedelta(seconds=ACCOUNT.delay(n + 1))
    assert harness.failures("password:account:acc-1") == 100
    for later in (at, at + dt.timedelta(days=30)):
        assert _check(t, at=later, ip=_ip(200)) == Verdict(allowed=False, locked=True)
    # The other kind and other accounts are untouched.
    assert t.check(kind="code", account_id="acc-1", ip=_ip(200), now=at).allowed
    assert _check(t, at=at, account="acc-2", ip=_ip(201)).allowed
    t.reset_account(account_id="acc-1")
    assert _check(t, at=at, ip=_ip(200)).allowed
    assert harness.failures("password:account:acc-1") is None


def test_one_source_cannot_lock_a_person_out(harness: Harness) -> None:
    """ASVS 6.1.1: an attacker on one address, failing as fast as allowed for four days,
    never locks the account, and the person (another address) never waits over 15 min."""
    t, at, end = harness.throttle, NOW, NOW + dt.timedelta(days=4)
    attacker, person = "192.0.2.66", "198.51.100.7"
    attempts, longest_wait_for_person = 0, 0
    while at < end:
        seen = _check(t, at=at, ip=person)
        assert not seen.locked
        longest_wait_for_person = max(longest_wait_for_person, seen.retry_after)
        verdict = _check(t, at=at, ip=attacker)
        if not verdict.allowed:
            at += dt.timedelta(seconds=verdict.retry_after)
            continue
        _fail(t, at=at, ip=attacker)
        attempts += 1
    assert attempts <= 4 * PAIR.hard_stop  # type: ignore[operator]
    assert (harness.failures("password:account:acc-1") or 0) < 100
    assert longest_wait_for_person <= 15 * 60
    # The attacker really was failing as fast as allowed: twenty a day, no more.
    assert attempts >= 3 * PAIR.hard_stop  # type: ignore[operator]
    # The person gets in once the current delay has run out, which resets it all.
    wait = _check(t, at=at, ip=person).retry_after
    at += dt.timedelta(seconds=wait)
    assert _check(t, at=at, ip=person).allowed
    t.record_success(kind="password", account_id="acc-1", ip=person, now=at)
    assert harness.failures("password:account:acc-1") is None


def test_pair_block_lifts_a_day_after_the_last_failure(harness: Harness) -> None:
    t, at = harness.throttle, NOW
    for n in range(20):
        at += dt.timedelta(seconds=ACCOUNT.delay(n))
        _fail(t, at=at, ip="192.0.2.5")
    verdict = _check(t, at=at + dt.timedelta(hours=1), ip="192.0.2.5")
    assert not verdict.allowed
    assert verdict.retry_after == 23 * 3600
    assert not verdict.locked
    assert _check(t, at=at + dt.timedelta(hours=1), ip="192.0.2.6").allowed
    after = at + dt.timedelta(days=1)
    assert _check(t, at=after, ip="192.0.2.5").allowed
    _fail(t, at=after, ip="192.0.2.5")
    assert harness.failures("password:pair:acc-1:192.0.2.5") == 1  # started again


def test_spraying_from_one_source_is_slowed_and_then_forgotten(harness: Harness) -> None:
    """Unknown accounts count against the source only; 30 free, then growing delays."""
    t, at = harness.throttle, NOW
    for _ in range(30):
        assert _check(t, at=at, account=None, ip="192.0.2.9").allowed
        _fail(t, at=at, account=None, ip="192.0.2.9")
    assert harness.keys() == {"password:ip:192.0.2.9"}
    assert _check(t, at=at, account=None, ip="192.0.2.9") == Verdict(False, retry_after=1)
    # The source's delay applies to real accounts too, and not to other sources.
    assert not _check(t, at=at, account="acc-3", ip="192.0.2.9").allowed
    assert _check(t, at=at, account=None, ip="192.0.2.10").allowed
    # An hour without failures and the source starts afresh.
    later = at + dt.timedelta(hours=1)
    assert _check(t, at=later, account=None, ip="192.0.2.9").allowed
    _fail(t, at=later, account=None, ip="192.0.2.9")
    assert harness.failures("password:ip:192.0.2.9") == 1


def test_without_an_address_only_the_account_counts(harness: Harness) -> None:
    t = harness.throttle
    for _ in range(6):
        _fail(t, at=NOW, ip=None)
    assert harness.keys() == {"password:account:acc-1"}
    assert not _check(t, at=NOW, ip=None).allowed


def test_racing_processes_lose_no_failures(harness: Harness) -> None:
    """Eight "processes" (own connections) record five failures each at once."""
    racers, each = 8, 5
    throttles = [harness.make_another() for _ in range(racers)]
    barrier = threading.Barrier(racers)
    errors: list[BaseException] = []

    def run(t: Throttle) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(each):
                _fail(t, at=NOW, ip="192.0.2.1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in throttles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert harness.failures("password:account:acc-1") == racers * each
    assert harness.failures("password:pair:acc-1:192.0.2.1") == racers * each
    assert harness.failures("password:ip:192.0.2.1") == racers * each


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
    client = _redis_or_skip()
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
    _redis_or_skip()
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
    services: Services,
) -> None:
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
