"""Failure budgets on every backend: delays, hard stop, separation of kinds and sources,
no lock-out at an attacker's will, and counts that survive racing processes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from idp.accounts import throttle as policy
from idp.accounts.throttle import ACCOUNT, PAIR, SOURCE, Throttle, Verdict
from tests.accounts._throttle_harness import (
    NOW,
    Harness,
    harness,
)
from tests.accounts._throttle_harness import address as _ip
from tests.accounts._throttle_harness import check as _check
from tests.accounts._throttle_harness import fail as _fail

__all__ = ["harness"]  # the fixture, imported for pytest


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


def test_a_locked_account_says_locked_without_a_wait_even_when_the_source_is_slowed() -> None:
    locked = policy.Counter(100, NOW)
    slowed = policy.Counter(40, NOW)
    verdict = policy.judge([(ACCOUNT, locked), (SOURCE, slowed)], now=NOW)
    assert verdict == Verdict(allowed=False, retry_after=0, locked=True)
    waiting = policy.judge([(ACCOUNT, policy.Counter(6, NOW)), (SOURCE, slowed)], now=NOW)
    assert waiting == Verdict(allowed=False, retry_after=SOURCE.delay(40))
