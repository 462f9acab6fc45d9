"""The pages' use of the failure budgets (`idp.accounts.throttle`), and the client's IP.

Passwords and codes have separate budgets (STANDARDS, NIST 800-63B 5.2.2), each counted per
account and per client IP and shared by every process. The client IP is what uvicorn
puts in `request.client` after applying trusted proxy headers (`IDP_FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import hashlib
import hmac
import math

from fastapi import Request

from idp.accounts.emails import InvalidEmail, parse_email
from idp.accounts.throttle import Throttle, Verdict, make_throttle
from idp.app import Services

PASSWORD = "password"  # noqa: S105 (a budget's name)
CODE = "code"


def throttle_for(services: Services) -> Throttle:
    """The process's throttle (built once and kept with the services)."""
    return make_throttle(services)


def throttle_subject(services: Services, *, account_id: str | None, email: str) -> str:
    """Whose password budget an attempt spends: the account's, or for an address with no
    account a stand-in keyed by the address.

    Unknown addresses get the same per-account delays as real ones, so the delays cannot
    tell an attacker which addresses have accounts (ASVS 6.3.8). The stand-in is an HMAC
    of the normalised address, so the counters never store addresses people typed.
    """
    if account_id is not None:
        return account_id
    try:
        key = parse_email(email).key
    except InvalidEmail:
        key = email.casefold()
    secret = next(iter(services.settings.encryption_keyring.values()))
    digest = hmac.new(secret, b"throttle-subject:" + key.encode(), hashlib.sha256)
    return "unknown:" + digest.hexdigest()[:32]


def client_ip(request: Request) -> str | None:
    """The client's address as uvicorn resolved it (proxy headers from trusted hops only)."""
    return request.client.host if request.client else None


def refusal(verdict: Verdict) -> str:
    """The message key for a refused attempt: `locked`, or `throttled:<minutes, >= 1>`."""
    if verdict.locked:
        return "locked"
    return f"throttled:{max(1, math.ceil(verdict.retry_after / 60))}"
