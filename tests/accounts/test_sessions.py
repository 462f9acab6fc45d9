"""Browser sessions: opaque cookies, digests at rest, idle and absolute limits, revocation."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import select
from starlette.responses import Response

from idp.accounts import sessions
from idp.app import Services
from idp.db import transaction
from idp.models import Account, BrowserSession
from idp.oauth.acr import ACR_MFA
from idp.settings import Settings
from tests.accounts._identity import NOW, make_account

AMR = ["pwd", "otp", "mfa"]


def _start(
    services: Services,
    *,
    account_id: str | None = None,
    auth_time: dt.datetime = NOW,
    now: dt.datetime = NOW,
) -> tuple[str, str, str]:
    """Start a session; returns (account id, sid, cookie value)."""
    with transaction(services.sessions) as db:
        if account_id is None:
            account_id = make_account(db).id
        row, cookie = sessions.start_session(
            db,
            account_id=account_id,
            auth_time=auth_time,
            amr=AMR,
            acr=ACR_MFA,
            settings=services.settings,
            now=now,
        )
        return account_id, row.sid, cookie


def _lookup(services: Services, cookie: str | None, now: dt.datetime) -> BrowserSession | None:
    with transaction(services.sessions) as db:
        return sessions.current_session(
            db, cookie_value=cookie, settings=services.settings, now=now
        )


def _last_seen(services: Services, sid: str) -> dt.datetime:
    with transaction(services.sessions) as db:
        return db.scalars(
            select(BrowserSession.last_seen_at).where(BrowserSession.sid == sid)
        ).one()


# --- cookie name and attributes ---------------------------------------------------------------


def test_cookie_name_is_host_prefixed_only_on_https() -> None:
    assert sessions.session_cookie_name(Settings(issuer="https://id.example")) == (
        "__Host-idp-session"
    )
    assert sessions.session_cookie_name(Settings(issuer="http://127.0.0.1:8000")) == "idp-session"


def _set_cookie_header(response: Response) -> str:
    headers = [v for k, v in response.raw_headers if k == b"set-cookie"]
    assert len(headers) == 1
    return headers[0].decode()


def test_session_cookie_on_https_is_host_prefixed_secure_httponly_lax_without_lifetime() -> None:
    response = Response()
    sessions.set_session_cookie(
        response, value="opaque-value", settings=Settings(issuer="https://id.example")
    )
    header = _set_cookie_header(response)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert header.startswith("__Host-idp-session=opaque-value;")
    assert {"httponly", "secure", "path", "samesite"} <= attributes
    assert "Path=/;" in header or header.endswith("Path=/")
    assert "samesite=lax" in header.lower()
    # __Host- requires no Domain; a browser-session cookie has no Max-Age or Expires.
    assert "domain" not in attributes
    assert "max-age" not in attributes
    assert "expires" not in attributes


def test_session_cookie_on_http_is_not_secure_nor_host_prefixed() -> None:
    response = Response()
    sessions.set_session_cookie(response, value="v", settings=Settings())
    header = _set_cookie_header(response)
    assert header.startswith("idp-session=v;")
    assert "secure" not in header.lower()
    assert "httponly" in header.lower()


def test_clear_session_cookie_expires_the_same_cookie() -> None:
    response = Response()
    sessions.clear_session_cookie(response, settings=Settings(issuer="https://id.example"))
    header = _set_cookie_header(response)
    assert header.startswith("__Host-idp-session=")
    assert "Max-Age=0" in header
    assert "Secure" in header
    assert "Path=/" in header


# --- starting and finding sessions ---------------------------------------------------------------


def test_start_session_stores_only_a_digest_and_remembers_the_authentication(
    services: Services,
) -> None:
    account_id, sid, cookie = _start(services, auth_time=NOW - dt.timedelta(seconds=20))
    assert len(cookie) >= 43  # 256 bits, base64url
    with transaction(services.sessions) as db:
        row = db.scalars(select(BrowserSession).where(BrowserSession.sid == sid)).one()
        assert row.id_hash == hashlib.sha256(cookie.encode()).hexdigest()
        assert cookie not in (row.id_hash, row.sid)
        assert row.account_id == account_id
        assert row.amr == AMR
        assert row.acr == ACR_MFA
        assert row.auth_time == NOW - dt.timedelta(seconds=20)
        # The absolute limit runs from authentication.
        limit = dt.timedelta(seconds=services.settings.session_absolute_seconds)
        assert row.expires_at == NOW - dt.timedelta(seconds=20) + limit
    found = _lookup(services, cookie, NOW)
    assert found is not None
    assert found.sid == sid


def test_each_session_gets_fresh_random_values(services: Services) -> None:
    account_id, sid_a, cookie_a = _start(services)
    _, sid_b, cookie_b = _start(services, account_id=account_id)
    assert cookie_a != cookie_b
    assert sid_a != sid_b


@pytest.mark.parametrize("cookie", [None, "", "not-a-session", "x" * 5000])
def test_unknown_or_absurd_cookie_finds_nothing(services: Services, cookie: str | None) -> None:
    _start(services)
    assert _lookup(services, cookie, NOW) is None


def test_replacing_a_session_ends_the_old_one(services: Services) -> None:
    """ASVS 7.2.4: a new session token at sign-in and after the second factor."""
    account_id, old_sid, old_cookie = _start(services)
    later = NOW + dt.timedelta(minutes=2)
    with transaction(services.sessions) as db:
        old = sessions.current_session(
            db, cookie_value=old_cookie, settings=services.settings, now=later
        )
        assert old is not None
        new, new_cookie = sessions.start_session(
            db,
            account_id=account_id,
            auth_time=later,
            amr=AMR,
            acr=ACR_MFA,
            settings=services.settings,
            now=later,
            replacing=old,
        )
        new_sid = new.sid
    assert _lookup(services, old_cookie, later) is None
    found = _lookup(services, new_cookie, later)
    assert found is not None
    assert found.sid == new_sid != old_sid


def test_step_up_keeping_the_password_auth_time_does_not_extend_the_absolute_limit(
    services: Services,
) -> None:
    account_id, _, _ = _start(services)
    much_later = NOW + dt.timedelta(hours=11)
    _, sid, cookie = _start(services, account_id=account_id, auth_time=NOW, now=much_later)
    absolute = dt.timedelta(seconds=services.settings.session_absolute_seconds)
    assert _lookup(services, cookie, NOW + absolute - dt.timedelta(seconds=1)) is not None
    assert _lookup(services, cookie, NOW + absolute) is None
    assert sid


# --- limits ----------------------------------------------------------------------------------


def test_idle_limit_ends_a_session_left_alone(services: Services) -> None:
    _, _, cookie = _start(services)
    idle = dt.timedelta(seconds=services.settings.session_idle_seconds)
    assert _lookup(services, cookie, NOW + idle - dt.timedelta(seconds=1)) is not None
    # That lookup refreshed the idle timer; a fresh session left alone for exactly the
    # idle limit is gone.
    _, _, other = _start(services)
    assert _lookup(services, other, NOW + idle) is None


def test_use_refreshes_the_idle_timer_but_at_most_once_a_minute(services: Services) -> None:
    _, sid, cookie = _start(services)
    assert _lookup(services, cookie, NOW + dt.timedelta(seconds=30)) is not None
    assert _last_seen(services, sid) == NOW  # no write for a request within a minute
    touched = NOW + dt.timedelta(seconds=61)
    assert _lookup(services, cookie, touched) is not None
    assert _last_seen(services, sid) == touched
    idle = dt.timedelta(seconds=services.settings.session_idle_seconds)
    # Measured from the refreshed time now: past NOW + idle, still alive.
    assert _lookup(services, cookie, NOW + idle + dt.timedelta(seconds=30)) is not None
    assert _lookup(services, cookie, NOW + idle + dt.timedelta(seconds=61) + idle) is None


def test_absolute_limit_ends_even_a_busy_session(services: Services) -> None:
    _, _, cookie = _start(services)
    absolute = dt.timedelta(seconds=services.settings.session_absolute_seconds)
    at = NOW
    while at < NOW + absolute - dt.timedelta(minutes=30):
        at += dt.timedelta(minutes=30)
        assert _lookup(services, cookie, at) is not None, at
    assert _lookup(services, cookie, NOW + absolute) is None


def test_ended_session_is_not_found(services: Services) -> None:
    _, _, cookie = _start(services)
    with transaction(services.sessions) as db:
        row = sessions.current_session(db, cookie_value=cookie, settings=services.settings, now=NOW)
        assert row is not None
        sessions.end_session(db, session=row, now=NOW + dt.timedelta(seconds=1))
        sessions.end_session(db, session=row, now=NOW + dt.timedelta(seconds=9))
        assert row.ended_at == NOW + dt.timedelta(seconds=1)
    assert _lookup(services, cookie, NOW + dt.timedelta(seconds=2)) is None


def test_disabled_account_has_no_session(services: Services) -> None:
    account_id, _, cookie = _start(services)
    with transaction(services.sessions) as db:
        db.get_one(Account, account_id).disabled_at = NOW
    assert _lookup(services, cookie, NOW + dt.timedelta(seconds=1)) is None


def test_end_account_sessions_ends_only_that_accounts_live_sessions(services: Services) -> None:
    account_id, _, cookie_a = _start(services)
    _, _, cookie_b = _start(services, account_id=account_id)
    _, _, other_cookie = _start(services)
    with transaction(services.sessions) as db:
        count = sessions.end_account_sessions(db, account_id=account_id, now=NOW)
        assert count == 2
        assert sessions.end_account_sessions(db, account_id=account_id, now=NOW) == 0
    assert _lookup(services, cookie_a, NOW) is None
    assert _lookup(services, cookie_b, NOW) is None
    assert _lookup(services, other_cookie, NOW) is not None


def test_purge_deletes_only_sessions_dead_for_over_a_day(services: Services) -> None:
    day = dt.timedelta(days=1)
    absolute = dt.timedelta(seconds=services.settings.session_absolute_seconds)
    today = NOW + 2 * day
    account_id, live_sid, live_cookie = _start(services, auth_time=today, now=today)
    _, ended_long_ago, _ = _start(services, account_id=account_id)
    _, ended_recently, _ = _start(services, account_id=account_id, auth_time=today, now=today)
    long_ago = NOW - absolute
    _, expired_long_ago, _ = _start(
        services, account_id=account_id, auth_time=long_ago, now=long_ago
    )
    with transaction(services.sessions) as db:
        rows = {r.sid: r for r in db.scalars(select(BrowserSession))}
        sessions.end_session(db, session=rows[ended_long_ago], now=NOW)
        sessions.end_session(db, session=rows[ended_recently], now=NOW + 2 * day)
    with transaction(services.sessions) as db:
        assert sessions.purge_sessions(db, now=NOW + 2 * day) == 2
        left = set(db.scalars(select(BrowserSession.sid)))
    assert left == {live_sid, ended_recently}
    assert expired_long_ago not in left
    assert _lookup(services, live_cookie, NOW + 2 * day) is not None
