"""The pages' use of the failure budgets (`idp.accounts.throttle`), and the client's IP.

Passwords and codes have separate budgets (STANDARDS, NIST 800-63B 5.2.2), each counted per
account and per client IP and shared by every process. The client IP is what uvicorn
puts in `request.client` after applying trusted proxy headers (`IDP_FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from fastapi import Request

from idp.app import Services

PASSWORD = "password"  # noqa: S105 (a budget's name)
CODE = "code"

_EXTRAS_KEY = "pages.throttle"


def throttle_for(services: Services) -> Any:
    """The process's throttle, built once from the services and kept with them."""
    throttle = services.extras.get(_EXTRAS_KEY)
    if throttle is None:
        from idp.accounts.throttle import make_throttle  # type: ignore[import-not-found,unused-ignore]

        throttle = services.extras[_EXTRAS_KEY] = make_throttle(services)
    return throttle


def client_ip(request: Request) -> str | None:
    """The client's address as uvicorn resolved it (proxy headers from trusted hops only)."""
    return request.client.host if request.client else None


def refusal(verdict: Any) -> str:
    """The message key for a refused attempt: `throttled:<whole minutes, at least 1>`."""
    wait = verdict.retry_after
    seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait or 0)
    return f"throttled:{max(1, math.ceil(seconds / 60))}"
