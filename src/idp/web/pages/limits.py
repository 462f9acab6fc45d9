"""The pages' use of the failure budgets (`idp.accounts.throttle`), and the client's IP.

Passwords and codes have separate budgets (STANDARDS, NIST 800-63B 5.2.2), each counted per
account and per client IP and shared by every process. The client IP is what uvicorn
puts in `request.client` after applying trusted proxy headers (`IDP_FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import math

from fastapi import Request

from idp.accounts.throttle import Throttle, Verdict, make_throttle
from idp.app import Services

PASSWORD = "password"  # noqa: S105 (a budget's name)
CODE = "code"


def throttle_for(services: Services) -> Throttle:
    """The process's throttle (built once and kept with the services)."""
    return make_throttle(services)


def client_ip(request: Request) -> str | None:
    """The client's address as uvicorn resolved it (proxy headers from trusted hops only)."""
    return request.client.host if request.client else None


def refusal(verdict: Verdict) -> str:
    """The message key for a refused attempt: `locked`, or `throttled:<minutes, >= 1>`."""
    if verdict.locked:
        return "locked"
    return f"throttled:{max(1, math.ceil(verdict.retry_after / 60))}"
