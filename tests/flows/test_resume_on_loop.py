"""`/authorize/resume` on the event loop (`authorize.resume_on_loop`, on PostgreSQL and
SQLite), and every way it hands over to the threaded `resume` with nothing changed: the
code it issues is the one the client redeems, a browser that may not resume gets nothing
there, and the claim it rolled back is still there for the threaded path to make.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select, update

from idp.accounts.sessions import TOUCH_INTERVAL
from idp.models import Account, BrowserSession, Grant, LoginTransaction, utcnow
from idp.oauth import client_cache
from idp.oauth.server import get_oauth_server
from tests.conftest import LiveServer
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    oauth_client,
    redirect_params,
    register_person,
    verify_id_token,
)
from tests.flows.pages import write_lock_held_elsewhere
from tests.flows.signin import Completed, sign_in_until_resume, start_sign_in
from tests.flows.test_statement_counts import statements

_BROWSERS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_browsers() -> Iterator[None]:
    yield
    while _BROWSERS:
        _BROWSERS.pop().close()


def completed_sign_in(
    server: LiveServer, app: RegisteredClient, person: Person, **params: str
) -> Completed:
    done = sign_in_until_resume(server, app, person, **params)
    _BROWSERS.append(done.browser)
    return done


def redeem(server: LiveServer, app: RegisteredClient, done: Completed, code: str) -> dict:
    token: dict = oauth_client(server, app).fetch_token(
        f"{server.url}/token", code=code, code_verifier=done.code_verifier
    )
    return token


def consumed(server: LiveServer, tx: str) -> bool:
    from idp.crypto import token_digest

    with server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(tx))
        assert row is not None
        return row.consumed_at is not None


def test_the_usual_resume_sends_nothing_through_the_engine(live_server, app, person) -> None:
    done = completed_sign_in(live_server, app, person, nonce="n-1")
    with statements(live_server) as sent:
        back = done.browser.get(done.resume_url)
    got = redirect_params(back)
    assert sent == []  # claim, grant and code over `idp.async_db` or `idp.loop_sqlite`
    # What was written is what the client redeems: the grant (with its `amr`, JSON),
    # the code with its PKCE challenge, nonce and redirect URI.
    token = redeem(live_server, app, done, got["code"])
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert claims["sub"] == person.account_id
    assert claims["nonce"] == "n-1"
    assert set(claims["amr"]) >= {"pwd", "otp"}
    with live_server.services.sessions() as db:
        grant = db.scalars(select(Grant).where(Grant.account_id == person.account_id)).one()
        assert set(grant.amr) >= {"pwd", "otp"}
        assert grant.sid == claims["sid"]
    assert consumed(live_server, done.tx)
    # Once only: the loop claims nothing, and the threaded path says it was used.
    again = done.browser.get(done.resume_url, headers={"Accept": "text/html"})
    assert again.status_code == 400
    assert "already been used" in again.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_held_write_lock_sends_resume_and_redemption_to_threads(
    live_server, app, person
) -> None:
    done = completed_sign_in(live_server, app, person, nonce="n-1")
    with write_lock_held_elsewhere(live_server), statements(live_server) as sent:
        back = done.browser.get(done.resume_url)
    assert {"SELECT", "UPDATE", "INSERT"} <= set(sent)  # the thread's, once the lock was free
    assert consumed(live_server, done.tx)
    with write_lock_held_elsewhere(live_server), statements(live_server) as sent:
        token = redeem(live_server, app, done, redirect_params(back)["code"])
    assert {"SELECT", "UPDATE", "INSERT"} <= set(sent)
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert (claims["sub"], claims["nonce"]) == (person.account_id, "n-1")


def test_a_disabled_account_gets_no_code_and_the_claim_is_rolled_back(
    live_server, app, person
) -> None:
    """The claim's statement joins the session but not its liveness: the loop checks the
    account after the claim, and must roll the claim back when it is disabled."""
    done = completed_sign_in(live_server, app, person)
    with live_server.services.sessions.begin() as db:
        db.execute(
            update(Account).where(Account.id == person.account_id).values(disabled_at=utcnow())
        )
    refused = done.browser.get(done.resume_url)
    assert refused.status_code == 400
    assert "location" not in refused.headers
    assert not consumed(live_server, done.tx)
    with live_server.services.sessions.begin() as db:
        db.execute(update(Account).where(Account.id == person.account_id).values(disabled_at=None))
    assert "code" in redirect_params(done.browser.get(done.resume_url))


def test_an_ended_session_gets_no_code(live_server, app, person) -> None:
    done = completed_sign_in(live_server, app, person)
    with live_server.services.sessions.begin() as db:
        db.execute(
            update(BrowserSession)
            .where(BrowserSession.account_id == person.account_id)
            .values(ended_at=utcnow())
        )
    refused = done.browser.get(done.resume_url, headers={"Accept": "text/html"})
    assert refused.status_code == 400
    assert "finished elsewhere" in refused.text
    assert not consumed(live_server, done.tx)


def test_another_browsers_session_claims_nothing(live_server, app, person) -> None:
    done = completed_sign_in(live_server, app, person)
    other = completed_sign_in(
        live_server, app, register_person(live_server, email="sam@example.org")
    )
    stolen = other.browser.get(done.resume_url, headers={"Accept": "text/html"})
    assert stolen.status_code == 400
    assert "finished elsewhere" in stolen.text
    assert not consumed(live_server, done.tx)
    assert "code" in redirect_params(done.browser.get(done.resume_url))


def test_a_session_due_its_idle_write_resumes_in_a_thread(live_server, app, person) -> None:
    """A session last seen over `TOUCH_INTERVAL` ago has its `last_seen_at` written when
    used: the loop leaves that to the threaded path, which issues the code as usual."""
    done = completed_sign_in(live_server, app, person)
    server = get_oauth_server(live_server.services)
    later = utcnow() + TOUCH_INTERVAL + dt.timedelta(seconds=1)
    server.now = lambda: later
    try:
        with statements(live_server) as sent:
            got = redirect_params(done.browser.get(done.resume_url))
    finally:
        server.now = utcnow
    assert "code" in got
    assert "UPDATE" in sent  # through the engine: the claim, and the session's touch
    with live_server.services.sessions() as db:
        session = db.scalars(
            select(BrowserSession).where(BrowserSession.account_id == person.account_id)
        ).one()
        assert session.last_seen_at == later


def test_a_client_not_cached_resumes_in_a_thread(live_server, app, person) -> None:
    done = completed_sign_in(live_server, app, person)
    client_cache.invalidate_all()
    with statements(live_server) as sent:
        got = redirect_params(done.browser.get(done.resume_url))
    assert "SELECT" in sent  # the client, read with the threaded path's session
    assert redeem(live_server, app, done, got["code"])["id_token"]


def test_a_refusal_by_the_grant_is_the_threaded_answer(live_server, app, person) -> None:
    """The grant's refusal (here: the client became third-party after the pages were
    done, so consent was never asked) is the threaded path's answer: the loop rolls back,
    the thread claims and sends `access_denied` back to the client, and issues nothing."""
    from idp.models import Client

    done = completed_sign_in(live_server, app, person)
    with live_server.services.sessions.begin() as db:  # the ORM: caches see the change
        client = db.get(Client, app.client_id)
        assert client is not None
        client.first_party = False
    with httpx.Client() as other:  # an /authorize request caches the changed client
        start_sign_in(live_server, app, other)
    got = redirect_params(done.browser.get(done.resume_url))
    assert got["error"] == "access_denied"
    assert "code" not in got
    assert consumed(live_server, done.tx)
    with live_server.services.sessions() as db:
        assert db.scalars(select(Grant).where(Grant.account_id == person.account_id)).all() == []
