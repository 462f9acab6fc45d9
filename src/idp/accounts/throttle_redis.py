"""Failure budgets in Redis, used when `IDP_REDIS_URL` is set (several instances, one Redis).

Each counter is a hash `{n: failures, t: last failure, epoch seconds}` changed only by one
Lua script, which Redis runs atomically: read, forget-or-increment and stamp cannot
interleave with another process's. Counters that are forgotten after a quiet period also
get a Redis expiry, so they do not pile up; account counters never expire (the hard stop
of NIST 800-63B 5.2.2 stays until a success or support clears it).

If Redis is unreachable the calls raise: sign-in fails closed rather than unthrottled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import redis

from idp.accounts.throttle import KINDS, Budget, Counter, Verdict, judge, keys_for

PREFIX = "idp:throttle:"

#: KEYS[1]: the counter. ARGV[1]: now; ARGV[2]: forget failures at or before this time
#: ("" = never); ARGV[3]: expiry in seconds ("" = none).
_INCREMENT = """
local last = redis.call('HGET', KEYS[1], 't')
local n
if last and (ARGV[2] == '' or tonumber(last) > tonumber(ARGV[2])) then
  n = redis.call('HINCRBY', KEYS[1], 'n', 1)
else
  redis.call('HSET', KEYS[1], 'n', 1)
  n = 1
end
redis.call('HSET', KEYS[1], 't', ARGV[1])
if ARGV[3] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return n
"""

#: Redis expiry slack beyond the forgetting period, for clock differences between hosts.
EXPIRY_SLACK = 300


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisThrottle:
    """The `Throttle` over Redis."""

    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._increment = client.register_script(_INCREMENT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PREFIX) -> RedisThrottle:
        """A throttle on the Redis at `url` (short timeouts: sign-in must not hang)."""
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return cls(client, prefix=prefix)

    def dispose(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def check(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> Verdict:
        """May an attempt go ahead now? One round trip for all counters."""
        keys = keys_for(kind, account_id=account_id, ip=ip)
        if not keys:
            return Verdict(allowed=True)
        pipe = self.client.pipeline(transaction=False)
        for key, _ in keys:
            pipe.hmget(self.prefix + key, ["n", "t"])
        results: list[list[Any]] = pipe.execute()
        entries: list[tuple[Budget, Counter | None]] = []
        for (_, budget), (n, t) in zip(keys, results, strict=True):
            counter = None
            if n is not None and t is not None:
                last = dt.datetime.fromtimestamp(float(t), dt.UTC)
                counter = Counter(int(n), last)
            entries.append((budget, counter))
        return judge(entries, now=now)

    def record_failure(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> None:
        """Add one failure to each counter the attempt is charged to."""
        keys = keys_for(kind, account_id=account_id, ip=ip)
        if not keys:
            return
        pipe = self.client.pipeline(transaction=True)
        stamp = now.timestamp()
        for key, budget in keys:
            forget_before, expiry = "", ""
            if budget.forget_after is not None:
                forget_before = repr(stamp - budget.forget_after)
                expiry = str(budget.forget_after + EXPIRY_SLACK)
            self._increment(
                keys=[self.prefix + key], args=[repr(stamp), forget_before, expiry], client=pipe
            )
        pipe.execute()

    def record_success(
        self, *, kind: str, account_id: str | None, ip: str | None, now: dt.datetime
    ) -> None:
        """A success resets the account's counters (not the source's: see `throttle`)."""
        del now
        keys = [k for k, b in keys_for(kind, account_id=account_id, ip=ip) if b.reset_on_success]
        if keys:
            self.client.delete(*(self.prefix + k for k in keys))

    def reset_account(self, *, account_id: str, kinds: Sequence[str] = KINDS) -> None:
        """Clear the account's counters of `kinds`, from every source."""
        doomed = [f"{self.prefix}{kind}:account:{account_id}" for kind in kinds]
        for kind in kinds:
            pattern = f"{self.prefix}{kind}:pair:{_glob_escape(account_id)}:*"
            doomed.extend(self.client.scan_iter(match=pattern, count=500))
        self.client.delete(*doomed)
