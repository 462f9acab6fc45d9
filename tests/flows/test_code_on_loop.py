"""The security-code POST on the event loop (`idp.web.pages.code_on_loop`, on PostgreSQL
and SQLite), and
every way it hands over to the threaded path with nothing changed: the session it starts
is the one the client's tokens name, and a code it did not accept (spent already, refused
by the failure budget, posted without the page's CSRF token, for a step-up whose browser
lost its session, with the budget in Redis) is refused or answered there, as before, with
no code spent by the loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select, update

from idp.accounts import totp
from idp.accounts.sessions import session_cookie_name
from idp.accounts.throttle import make_throttle
from idp.crypto import token_digest
from idp.models import BrowserSession, TotpCredential, utcnow
from idp.oauth.acr import ACR_MFA
from tests.conftest import LiveServer, start_live_server
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    oauth_client,
    redirect_params,
    register_client,
    register_person,
    signed_in_browser,
    verify_id_token,
)
from tests.flows.pages import NOW, events, transaction, write_lock_held_elsewhere
from tests.flows.signin import parse_page, start_sign_in
from tests.flows.test_statement_counts import statements

_BROWSERS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_browsers() -> Iterator[None]:
    yield
    while _BROWSERS:
        _BROWSERS.pop().close()


@dataclass
class CodePage:
    """A browser on the security-code page of its journey, the password given."""

    browser: httpx.Client
    tx: str
    fields: dict[str, str]
    code_verifier: str

    def post(self, server: LiveServer, code: str, **fields: str) -> httpx.Response:
        return self.browser.post(
            f"{server.url}/signin/code?tx={self.tx}",
            data={**self.fields, "code": code, **fields},
        )

    def shown(self, server: LiveServer) -> str:
        """The error summary of the page a refused POST went back to."""
        page = self.browser.get(f"{server.url}/signin/code?tx={self.tx}")
        return parse_page(page.text).errors


def at_code_page(
    server: LiveServer,
    app: RegisteredClient,
    person: Person,
    browser: httpx.Client | None = None,
    **params: str,
) -> CodePage:
    """A browser (a new one unless given) through the password page to the code page."""
    browser = browser or httpx.Client()
    _BROWSERS.append(browser)
    started = start_sign_in(server, app, browser, **params)
    first = browser.get(server.url + started.response.headers["location"], follow_redirects=True)
    page = parse_page(first.text)
    if page.kind == "password":
        form = page.form_with("password")
        assert form is not None
        posted = browser.post(
            f"{server.url}/signin?tx={started.tx}",
            data={**form.fields, "email": person.email, "password": person.password},
        )
        assert posted.status_code == 303
        page = parse_page(browser.get(server.url + posted.headers["location"]).text)
    form = page.form_with("code")
    assert form is not None, page
    return CodePage(browser, started.tx, form.fields, started.code_verifier)


def code_at(person: Person, now: dt.datetime) -> str:
    return totp.code_at(person.totp_secret, totp.time_step(now))


def last_used_step(server: LiveServer, person: Person) -> int:
    with server.services.sessions() as db:
        credential = db.scalars(
            select(TotpCredential).where(TotpCredential.account_id == person.account_id)
        ).one()
        return credential.last_used_step


def sessions_of(server: LiveServer, person: Person) -> list[BrowserSession]:
    with server.services.sessions() as db:
        query = select(BrowserSession).where(BrowserSession.account_id == person.account_id)
        return list(db.scalars(query.order_by(BrowserSession.created_at)))


def test_the_usual_code_sends_nothing_through_the_engine(
    live_server, app, person, clock, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="idp.audit")
    page = at_code_page(live_server, app, person, nonce="n-1")
    password_time = transaction(live_server, page.tx).auth_time
    clock[0] = NOW + dt.timedelta(seconds=7)
    with statements(live_server) as sent:
        done = page.post(live_server, code_at(person, clock[0]))
    assert sent == []  # the budget, the code's step, session, audit and transaction
    assert done.status_code == 303
    assert done.headers["location"] == f"/authorize/resume?tx={page.tx}"
    cookie = done.cookies.get(session_cookie_name(live_server.services.settings))
    assert cookie
    # What was written: the session the cookie names, the code's step spent, the
    # transaction completed, the audit event.
    (session,) = sessions_of(live_server, person)
    assert session.id_hash == token_digest(cookie)
    assert session.amr == ["pwd", "otp", "mfa"]
    assert session.acr == ACR_MFA
    assert session.auth_time == password_time
    assert session.last_seen_at == clock[0]
    absolute = live_server.services.settings.session_absolute_seconds
    assert session.expires_at == password_time + dt.timedelta(seconds=absolute)
    assert last_used_step(live_server, person) == totp.time_step(clock[0])
    row = transaction(live_server, page.tx)
    assert (row.stage, row.completed_at, row.acr) == ("done", clock[0], ACR_MFA)
    assert row.amr == ["pwd", "otp", "mfa"]
    assert row.auth_time == password_time
    assert row.error is None
    (event,) = events(live_server, "signin.completed", account_id=person.account_id)
    assert (event.client_id, event.ip) == (app.client_id, "127.0.0.1")
    assert event.detail == {"amr": ["pwd", "otp", "mfa"], "acr": ACR_MFA}
    logged = [r.message for r in caplog.records if r.message.startswith("signin.completed ")]
    assert logged == [
        f"signin.completed account={person.account_id} actor=None client={app.client_id}"
        f" ip=127.0.0.1 {event.detail}"
    ]  # once, after the COMMIT
    # And the client's tokens name that session and that sign-in.
    back = page.browser.get(live_server.url + done.headers["location"])
    token = oauth_client(live_server, app).fetch_token(
        f"{live_server.url}/token",
        code=redirect_params(back)["code"],
        code_verifier=page.code_verifier,
    )
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert claims["sid"] == session.sid
    assert claims["auth_time"] == int(password_time.timestamp())
    assert (claims["acr"], claims["nonce"]) == (ACR_MFA, "n-1")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_held_write_lock_sends_the_code_to_the_thread(
    live_server, app, person, clock
) -> None:
    page = at_code_page(live_server, app, person)
    with write_lock_held_elsewhere(live_server), statements(live_server) as sent:
        done = page.post(live_server, code_at(person, clock[0]))
    # The loop did not wait for the lock, nor write anything: the worker thread waited
    # its turn and answered as always.
    assert {"SELECT", "UPDATE", "INSERT"} <= set(sent)
    assert done.status_code == 303
    assert done.headers["location"] == f"/authorize/resume?tx={page.tx}"
    (session,) = sessions_of(live_server, person)
    cookie = done.cookies.get(session_cookie_name(live_server.services.settings))
    assert session.id_hash == token_digest(cookie)
    assert last_used_step(live_server, person) == totp.time_step(clock[0])
    assert len(events(live_server, "signin.completed", account_id=person.account_id)) == 1


def test_dead_sessions_are_purged_now_and_then(
    live_server, app, person, clock, monkeypatch
) -> None:
    from idp.accounts import sessions

    monkeypatch.setattr(sessions, "PURGE_ONE_IN", 1)  # this sign-in purges
    long_ago = NOW - dt.timedelta(days=3)
    with live_server.services.sessions.begin() as db:
        _, dead = sessions.start_session(
            db,
            account_id=person.account_id,
            auth_time=long_ago,
            amr=["pwd"],
            acr="x",
            settings=live_server.services.settings,
            now=long_ago,
        )
    page = at_code_page(live_server, app, person)
    done = page.post(live_server, code_at(person, NOW))
    assert done.headers["location"] == f"/authorize/resume?tx={page.tx}"
    cookie = done.cookies.get(session_cookie_name(live_server.services.settings))
    assert [s.id_hash for s in sessions_of(live_server, person)] == [token_digest(cookie)]
    assert dead != cookie


def test_a_code_spent_already_is_refused_and_counted(live_server, app, person, clock) -> None:
    page = at_code_page(live_server, app, person)
    step = totp.time_step(NOW)
    with live_server.services.sessions.begin() as db:
        db.execute(
            update(TotpCredential)
            .where(TotpCredential.account_id == person.account_id)
            .values(last_used_step=step)
        )
    refused = page.post(live_server, code_at(person, NOW))
    assert refused.status_code == 303
    assert refused.headers["location"] == f"/signin/code?tx={page.tx}"
    assert "has been used already" in page.shown(live_server)
    assert sessions_of(live_server, person) == []
    assert len(events(live_server, "signin.code_failed", account_id=person.account_id)) == 1
    throttle = make_throttle(live_server.services)
    verdict = throttle.check(kind="code", account_id=person.account_id, ip="127.0.0.1", now=NOW)
    assert verdict.resettable  # the failure was counted


def test_a_refusal_by_the_failure_budget_spends_no_code(live_server, app, person, clock) -> None:
    page = at_code_page(live_server, app, person)
    throttle = make_throttle(live_server.services)
    for _ in range(6):  # past the account's free failures: a delay of 2 s from NOW
        throttle.record_failure(kind="code", account_id=person.account_id, ip=None, now=NOW)
    code = code_at(person, NOW)
    refused = page.post(live_server, code)
    assert refused.headers["location"] == f"/signin/code?tx={page.tx}"
    assert "Too many attempts" in page.shown(live_server)
    assert len(events(live_server, "signin.throttled", account_id=person.account_id)) == 1
    # The loop took the code's step before it read the budget: rolled back, unspent.
    assert last_used_step(live_server, person) == 0
    assert sessions_of(live_server, person) == []
    # Once the delay is over the same code signs in, and the account's counter resets.
    clock[0] = NOW + dt.timedelta(seconds=3)
    done = page.post(live_server, code)
    assert done.headers["location"] == f"/authorize/resume?tx={page.tx}"
    assert len(sessions_of(live_server, person)) == 1
    verdict = throttle.check(kind="code", account_id=person.account_id, ip=None, now=clock[0])
    assert verdict.allowed
    assert not verdict.resettable


def test_a_source_refused_by_its_own_budget_spends_no_code(live_server, app, person, clock) -> None:
    """Password spraying from one address: the source's counter (which no success resets)
    refuses even an account that has no failures of its own."""
    page = at_code_page(live_server, app, person)
    throttle = make_throttle(live_server.services)
    for _ in range(31):  # past the source's free failures
        throttle.record_failure(kind="code", account_id=None, ip="127.0.0.1", now=NOW)
    refused = page.post(live_server, code_at(person, NOW))
    assert refused.headers["location"] == f"/signin/code?tx={page.tx}"
    assert "Too many attempts" in page.shown(live_server)
    assert last_used_step(live_server, person) == 0
    assert sessions_of(live_server, person) == []


def test_a_wrong_csrf_token_changes_nothing_but_the_message(
    live_server, app, person, clock
) -> None:
    page = at_code_page(live_server, app, person)
    refused = page.post(live_server, code_at(person, NOW), csrf_token="not-the-pages")
    assert refused.headers["location"] == f"/signin/code?tx={page.tx}"
    assert "nothing was sent" in page.shown(live_server)
    assert last_used_step(live_server, person) == 0
    assert sessions_of(live_server, person) == []
    assert transaction(live_server, page.tx).completed_at is None
    assert (
        page.post(live_server, code_at(person, NOW))
        .headers["location"]
        .startswith("/authorize/resume?")
    )


def test_a_wrong_code_is_refused_and_counted(live_server, app, person, clock) -> None:
    page = at_code_page(live_server, app, person)
    right = code_at(person, NOW)
    wrong = next(c for c in ("000000", "111111", "222222") if c != right)
    refused = page.post(live_server, wrong)
    assert refused.headers["location"] == f"/signin/code?tx={page.tx}"
    assert "not right" in page.shown(live_server)
    assert len(events(live_server, "signin.code_failed", account_id=person.account_id)) == 1
    assert last_used_step(live_server, person) == 0


def test_a_browser_with_a_session_ends_it(live_server, app, person, clock) -> None:
    browser = signed_in_browser(live_server, person)
    (old,) = sessions_of(live_server, person)
    page = at_code_page(live_server, app, person, browser, prompt="login")
    done = page.post(live_server, code_at(person, NOW))
    assert done.headers["location"] == f"/authorize/resume?tx={page.tx}"
    cookie = done.cookies.get(session_cookie_name(live_server.services.settings))
    assert cookie
    found = {session.id_hash: session for session in sessions_of(live_server, person)}
    assert found.keys() == {old.id_hash, token_digest(cookie)}
    assert found[old.id_hash].ended_at == NOW  # session fixation: the old one is dead
    assert found[token_digest(cookie)].ended_at is None


def test_a_client_that_asks_for_consent_goes_to_the_consent_page(
    live_server, person, clock
) -> None:
    third_party = register_client(live_server, client_id="partner", first_party=False)
    page = at_code_page(live_server, third_party, person)
    moved = page.post(live_server, code_at(person, NOW))
    assert moved.headers["location"] == f"/signin/consent?tx={page.tx}"
    assert sessions_of(live_server, person) == []
    assert last_used_step(live_server, person) == totp.time_step(NOW)


def test_a_step_up_whose_browser_lost_its_session_asks_for_the_password(
    live_server, app, person, clock
) -> None:
    """A step-up's journey holds no password: it comes from the browser's session. Sent
    without it, the code alone must not complete the sign-in."""
    browser = signed_in_browser(live_server, person, amr=("pwd",))
    page = at_code_page(live_server, app, person, browser, acr_values=ACR_MFA)
    assert transaction(live_server, page.tx).amr == []
    browser.cookies.clear()
    moved = page.post(live_server, code_at(person, NOW))
    assert moved.headers["location"] == f"/signin?tx={page.tx}"
    row = transaction(live_server, page.tx)
    assert (row.stage, row.completed_at, row.account_id) == ("password", None, None)
    assert len(sessions_of(live_server, person)) == 1  # only the one it started with


def test_an_expired_journey_gets_no_session(live_server, app, person, clock) -> None:
    page = at_code_page(live_server, app, person)
    # Past its expiry, which `/authorize` set by the real clock.
    lifetime = live_server.services.settings.login_transaction_seconds
    clock[0] = utcnow().replace(microsecond=0) + dt.timedelta(seconds=lifetime + 1)
    refused = page.post(live_server, code_at(person, clock[0]))
    assert refused.headers["location"] == f"/signin?tx={page.tx}"
    assert sessions_of(live_server, person) == []
    assert last_used_step(live_server, person) == 0


def test_with_the_failure_budget_in_redis_a_locked_account_is_refused(database_url) -> None:
    """With `IDP_REDIS_URL` the counters are in Redis, which the loop's read would not
    see: the loop takes no part, and Redis's lock holds."""
    from tests.accounts._throttle_harness import redis_or_skip, redis_url

    redis_or_skip()
    server = start_live_server(database_url, redis_url=redis_url())
    try:
        app = register_client(server, client_id="web-app")
        person = register_person(server)
        throttle = make_throttle(server.services)
        for _ in range(100):  # the account's hard stop
            throttle.record_failure(kind="code", account_id=person.account_id, ip=None, now=NOW)
        try:
            page = at_code_page(server, app, person)
            refused = page.post(server, code_at(person, utcnow()))
            assert refused.headers["location"] == f"/signin/code?tx={page.tx}"
            assert "cannot sign in until support clears it" in page.shown(server)
            assert last_used_step(server, person) == 0
        finally:
            throttle.reset_account(account_id=person.account_id)
    finally:
        server.stop()
        server.services.engine.dispose()
