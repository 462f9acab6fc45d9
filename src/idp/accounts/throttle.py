"""Failure budgets for sign-in: growing delays and a hard stop, shared by every process.

NIST 800-63B 5.2.2 (rev 3; rev 4 3.2.2): at most 100 consecutive failed attempts per
account, with delays before that; passwords and codes have separate budgets (kinds
`password` and `code`); a success resets the count. ASVS 6.1.1 asks that these limits do
not let an attacker lock a person out at will. Three counters per kind balance the two:

* account (every source together): no delay for the first 5 failures, then 2^(n-5) s,
  capped at 15 min; at 100 the account stops accepting that kind of attempt until support
  clears it (`reset_account`). Reset by a success. The delay is what keeps 100 far away:
  after the ramp a crowd of attackers still gets 4 tries an hour, so reaching 100 takes
  about a day, and the person's own successful sign-in at any point starts again from 0.
* pair (one source against one account): at 20 failures that source may not try that
  account again until 24 h after its last failure. Reset by a success. So one source can
  add at most 20 failures a day: it would need five days, with the person never signing
  in meanwhile, to reach 100; and it can hold the person behind a delay for roughly two
  hours a day at most (the ramp plus five capped delays), not lock them out.
* ip (one source against every account, password spraying): no delay for the first 30
  failures, then 2^(n-30) s capped at 15 min; forgotten an hour after its last failure.
  Not reset by a success, or an attacker would clear it by signing in to their own
  account. 30 is generous because a pharmacy's staff share one address behind NAT.
  IPv6 sources are counted per /64, which one subscriber usually holds.

For an address with no account the sign-in page passes a stand-in `account_id` keyed by
the address (`idp.web.pages.limits.throttle_subject`), so the delays look the same whether
or not an account exists; `account_id=None` counts per source only.

`check` and `record_failure` are separate calls around the verification, so attempts
racing through the same window all pass `check` before any of them is counted. The
server's concurrency bounds such a burst (tens of attempts), every one is still counted,
and the next `check` sees them all: it can push an account past 100 by a burst's size,
never past it indefinitely.

Backends: the database (`throttle_db`, default) or Redis (`throttle_redis`, when
`IDP_REDIS_URL` is set). Both apply the rules in this module to counters they update
atomically, with the caller's clock.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from idp.app import Services

KINDS = ("password", "code")
EXTRAS_KEY = "throttle"


@dataclass(frozen=True)
class Verdict:
    """Whether an attempt may go ahead; if not, after how many seconds it may.

    `locked` means the account reached the hard stop (NIST 800-63B 5.2.2): waiting does
    not help, only support can clear it; `retry_after` is then 0.

    `resettable` is False when the check saw no counter that a success resets, so the
    caller may skip `record_success` (nothing to delete: a round trip saved on every
    sign-in). A failure another request counts between the check and the success then
    stands, which only errs towards more delay. Backends that cannot tell leave it True.
    """

    allowed: bool
    retry_after: int = 0
    locked: bool = False
    resettable: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class Budget:
    """The rule for one kind of counter."""

    scope: str
    free: int  # failures before any delay
    max_delay: int  # seconds; 0: this counter never delays
    hard_stop: int | None  # failures at which attempts stop
    forget_after: int | None  # seconds after the last failure the count is forgotten
    reset_on_success: bool

    def delay(self, failures: int) -> int:
        """Seconds to wait after the last of `failures` failures (growing delays)."""
        if self.max_delay == 0 or failures < self.free:
            return 0
        exponent = failures - self.free
        return self.max_delay if exponent >= 30 else min(2**exponent, self.max_delay)


ACCOUNT = Budget("account", 5, 15 * 60, 100, None, reset_on_success=True)
PAIR = Budget("pair", 0, 0, 20, 24 * 3600, reset_on_success=True)
SOURCE = Budget("ip", 30, 15 * 60, None, 3600, reset_on_success=False)


@dataclass(frozen=True)
class Counter:
    """A stored count of failures and when the last one happened."""

    failures: int
    last_failure_at: dt.datetime


def source_key(ip: str) -> str:
    """The bucket an address is counted in: the address, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def keys_for(kind: str, *, account_id: str | None, ip: str | None) -> list[tuple[str, Budget]]:
    """The counters an attempt of `kind` is charged to, with their rules."""
    if kind not in KINDS:
        raise ValueError(f"unknown failure budget {kind!r}; expected one of {KINDS}")
    keys: list[tuple[str, Budget]] = []
    source = source_key(ip) if ip else None
    if account_id is not None:
        keys.append((f"{kind}:account:{account_id}", ACCOUNT))
        if source is not None:
            keys.append((f"{kind}:pair:{account_id}:{source}", PAIR))
    if source is not None:
        keys.append((f"{kind}:ip:{source}", SOURCE))
    return keys


def is_forgotten(budget: Budget, counter: Counter, now: dt.datetime) -> bool:
    """True when the counter's failures are old enough to no longer count."""
    if budget.forget_after is None:
        return False
    return now >= counter.last_failure_at + dt.timedelta(seconds=budget.forget_after)


def judge_one(budget: Budget, counter: Counter | None, now: dt.datetime) -> Verdict:
    """The verdict of one counter at `now`."""
    if counter is None or counter.failures <= 0 or is_forgotten(budget, counter, now):
        return Verdict(allowed=True)
    if budget.hard_stop is not None and counter.failures >= budget.hard_stop:
        if budget.forget_after is None:
            return Verdict(allowed=False, locked=True)
        until = counter.last_failure_at + dt.timedelta(seconds=budget.forget_after)
        return Verdict(allowed=False, retry_after=_seconds_until(until, now))
    until = counter.last_failure_at + dt.timedelta(seconds=budget.delay(counter.failures))
    if now < until:
        return Verdict(allowed=False, retry_after=_seconds_until(until, now))
    return Verdict(allowed=True)


def judge(entries: Iterable[tuple[Budget, Counter | None]], *, now: dt.datetime) -> Verdict:
    """The combined verdict: refused if any counter refuses; the longest wait wins."""
    verdicts = [judge_one(budget, counter, now) for budget, counter in entries]
    refused = [v for v in verdicts if not v.allowed]
    if not refused:
        return Verdict(allowed=True)
    if any(v.locked for v in refused):
        return Verdict(allowed=False, locked=True)  # no wait would help: say so, not a time
    return Verdict(allowed=False, retry_after=max(v.retry_after for v in refused))


def _seconds_until(until: dt.datetime, now: dt.datetime) -> int:
    return max(1, math.ceil((until - now).total_seconds()))


class Throttle(Protocol):
    """Failure budgets shared by every process (database or Redis backed)."""

    def check(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> Verdict:
        """May an attempt of `kind` go ahead now? Call before verifying anything."""
        ...

    def record_failure(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> None:
        """Count a failed attempt (pass `account_id=None` for unknown accounts)."""
        ...

    def record_success(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> None:
        """Reset the account's counters of `kind` after a successful attempt."""
        ...

    def reset_account(self, *, account_id: str, kinds: Sequence[str] = KINDS) -> None:
        """Clear the account's counters of `kinds` (support, after checking who is asking)."""
        ...


def make_throttle(services: Services) -> Throttle:
    """The process's throttle: Redis when `IDP_REDIS_URL` is set, else the database.

    Built once and kept in `services.extras["throttle"]`.
    """
    cached = services.extras.get(EXTRAS_KEY)
    if cached is not None:
        return cached  # type: ignore[return-value]
    throttle = build_throttle(redis_url=services.settings.redis_url, engine=services.engine)
    services.extras[EXTRAS_KEY] = throttle
    return throttle


def build_throttle(*, redis_url: str | None, engine: Engine) -> Throttle:
    """A new throttle on Redis if `redis_url` is given, else on the database of `engine`."""
    if redis_url:
        from idp.accounts.throttle_redis import RedisThrottle

        return RedisThrottle.from_url(redis_url)
    from idp.accounts.throttle_db import DatabaseThrottle

    return DatabaseThrottle.for_engine(engine)
