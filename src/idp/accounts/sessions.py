"""Server-side browser sessions behind an opaque cookie (ASVS 7.x, NIST 800-63B AAL2).

The cookie holds 256 random bits; the database keeps only their SHA-256 digest, so a
leaked table cannot be replayed as cookies. Every sign-in and step-up makes a new session
and ends the one it replaces (ASVS 7.2.4: new session token on authentication). A
session stops working after `session_idle_seconds` without use or `session_absolute_seconds`
after authentication (NIST 800-63B rev 4 AAL2: idle at most 1 h, absolute at most 24 h),
when it is ended, or when its account is disabled (ASVS 7.4.2).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, cast

from sqlalchemy import Dialect, Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from starlette.responses import Response

from idp.crypto import new_token, token_digest
from idp.db import driver_sql, driver_values
from idp.models import Account, BrowserSession, from_columns
from idp.settings import Settings

#: Cookie names. `__Host-` (RFC 6265bis 4.1.3.2) pins the cookie to this exact host,
#: Secure, Path=/ and no Domain, so a sibling subdomain cannot set or shadow it.
SECURE_COOKIE_NAME = "__Host-idp-session"
PLAIN_COOKIE_NAME = "idp-session"

#: `last_seen_at` is written at most this often: the idle limit is measured in minutes,
#: and a write per request would make every page view contend on the row.
TOUCH_INTERVAL = dt.timedelta(seconds=60)

#: Dead sessions are deleted this long after they stopped working, by one sign-in in
#: `PURGE_ONE_IN`.
PURGE_AFTER = dt.timedelta(days=1)
PURGE_ONE_IN = 200

#: Cookie values we issue are 43 characters; anything far longer is not ours and is not
#: worth hashing.
MAX_COOKIE_LENGTH = 128


def session_cookie_name(settings: Settings) -> str:
    """The cookie name: `__Host-` prefixed whenever cookies are Secure (https issuer)."""
    return SECURE_COOKIE_NAME if settings.secure_cookies else PLAIN_COOKIE_NAME


def _is_live(session: BrowserSession, *, settings: Settings, now: dt.datetime) -> bool:
    if session.ended_at is not None:
        return False
    # NIST 800-63B AAL2 absolute limit: fixed at sign-in, activity does not extend it.
    if now >= session.expires_at:
        return False
    # NIST 800-63B AAL2 idle limit / ASVS 7.3.1.
    idle_limit = dt.timedelta(seconds=settings.session_idle_seconds)
    return now < session.last_seen_at + idle_limit


#: The live-session read, built once so its compilation cache key is too (every request
#: that carries a cookie sends it).
_BY_COOKIE = (
    select(BrowserSession, Account.disabled_at)
    .join(Account, Account.id == BrowserSession.account_id)
    .where(BrowserSession.id_hash == bindparam("id_hash"))
)


_TABLE = cast(Table, BrowserSession.__table__)
_INSERT = insert(_TABLE)


def current_session(
    db: Session, *, cookie_value: str | None, settings: Settings, now: dt.datetime
) -> BrowserSession | None:
    """The live session named by the cookie, or None; refreshes its idle timer."""
    if not cookie_value or len(cookie_value) > MAX_COOKIE_LENGTH:
        return None
    row = db.execute(_BY_COOKIE, {"id_hash": token_digest(cookie_value)}).one_or_none()
    if row is None:
        return None
    session, disabled_at = row
    if not usable(session, disabled_at=disabled_at, settings=settings, now=now):
        return None
    if touch_due(session, now=now):
        session.last_seen_at = now
    return session


def usable(
    session: BrowserSession,
    *,
    disabled_at: dt.datetime | None,
    settings: Settings,
    now: dt.datetime,
) -> bool:
    """Whether `session` (read with its account's `disabled_at`) still signs its browser
    in: live, and its account not disabled (ASVS 7.4.2)."""
    return disabled_at is None and _is_live(session, settings=settings, now=now)


def touch_due(session: BrowserSession, *, now: dt.datetime) -> bool:
    """Whether using `session` now writes its `last_seen_at` (`TOUCH_INTERVAL`)."""
    return now - session.last_seen_at >= TOUCH_INTERVAL


def start_session(
    db: Session,
    *,
    account_id: str,
    auth_time: dt.datetime,
    amr: list[str],
    acr: str,
    settings: Settings,
    now: dt.datetime,
    replacing: BrowserSession | None = None,
) -> tuple[BrowserSession, str]:
    """Start a session after (re-)authentication; returns the row and the cookie value.

    `replacing` (the browser's previous session, if any) is ended: a fresh identifier at
    sign-in and after the second factor defeats session fixation (ASVS 7.2.4).
    """
    if replacing is not None:
        end_session(db, session=replacing, now=now)
    values, cookie_value = new_session(
        account_id=account_id, auth_time=auth_time, amr=amr, acr=acr, settings=settings, now=now
    )
    # A Core INSERT, sent now (the ORM's flush cost more than the statement); the row is
    # then attached to the session as if read, so later changes to it are written.
    db.connection().execute(_INSERT, values)
    session = from_columns(BrowserSession, values)
    make_transient_to_detached(session)
    db.add(session)
    if purge_due():
        purge_sessions(db, now=now)
    return session, cookie_value


def new_session(
    *,
    account_id: str,
    auth_time: dt.datetime,
    amr: list[str],
    acr: str,
    settings: Settings,
    now: dt.datetime,
) -> tuple[dict[str, Any], str]:
    """The row of a new session (by column) and the cookie value that names it."""
    cookie_value = new_token(32)
    # The absolute limit runs from authentication, not from this row: a step-up that
    # keeps the password's auth_time must not stretch the session past it.
    started = min(auth_time, now)
    values = {
        "id_hash": token_digest(cookie_value),
        "sid": new_token(32),
        "account_id": account_id,
        "auth_time": auth_time,
        "amr": list(amr),
        "acr": acr,
        "created_at": now,
        "last_seen_at": now,
        "expires_at": started + dt.timedelta(seconds=settings.session_absolute_seconds),
        "ended_at": None,
    }
    return values, cookie_value


def start_statements(
    dialect: Dialect, values: dict[str, Any], *, now: dt.datetime
) -> list[tuple[str, dict[str, Any]]]:
    """`start_session`'s statements for a browser with no session to replace, as
    PostgreSQL driver SQL and parameters (the security-code POST on the event loop,
    `idp.web.pages.code_on_loop`): the INSERT of `values` (`new_session`), and now and
    then the purge."""
    statements = [(driver_sql(dialect, _INSERT)[0], driver_values(dialect, _TABLE, values))]
    if purge_due():
        statements.append((driver_sql(dialect, _PURGE)[0], {"cutoff": now - PURGE_AFTER}))
    return statements


def purge_due() -> bool:
    """Whether this sign-in also purges dead sessions (one in `PURGE_ONE_IN`): now and
    then rather than on a schedule, so no job runner is needed."""
    return secrets.randbelow(PURGE_ONE_IN) == 0


_PURGE = delete(_TABLE).where(
    or_(
        _TABLE.c.ended_at <= bindparam("cutoff"),
        _TABLE.c.expires_at <= bindparam("cutoff"),
        _TABLE.c.last_seen_at <= bindparam("cutoff"),  # idle far beyond any idle limit
    )
)


def purge_sessions(db: Session, *, now: dt.datetime) -> int:
    """Delete sessions that ended or expired over a day ago; returns how many.

    They can never be used again; the audit trail keeps the sign-in events.
    """
    result = db.connection().execute(_PURGE, {"cutoff": now - PURGE_AFTER})
    return int(getattr(result, "rowcount", 0) or 0)


def end_session(db: Session, *, session: BrowserSession, now: dt.datetime) -> None:
    """End one session (sign-out, replacement); ending twice keeps the first time."""
    if session.ended_at is None:
        session.ended_at = now
        db.flush()


def end_account_sessions(db: Session, *, account_id: str, now: dt.datetime) -> int:
    """End every live session of an account (disable, MFA reset); returns how many."""
    result = db.execute(
        update(BrowserSession)
        .where(BrowserSession.account_id == account_id, BrowserSession.ended_at.is_(None))
        .values(ended_at=now)
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def set_session_cookie(response: Response, *, value: str, settings: Settings) -> None:
    """Set the session cookie: HttpOnly, SameSite=Lax, Secure and `__Host-` on https.

    No Max-Age or Expires: the cookie lives as long as the browser session and the server
    enforces the idle and absolute limits, so it never outlives the absolute limit on our
    side, and a shared pharmacy computer forgets it when the browser closes.
    SameSite=Lax (not Strict) so the top-level redirect back from an app to `/authorize`
    still carries it, which single sign-on needs.
    """
    response.set_cookie(
        session_cookie_name(settings),
        value,
        path="/",
        domain=None,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, *, settings: Settings) -> None:
    """Tell the browser to forget the session cookie (same attributes as when set)."""
    response.delete_cookie(
        session_cookie_name(settings),
        path="/",
        domain=None,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
