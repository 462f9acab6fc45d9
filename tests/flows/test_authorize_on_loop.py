"""`/authorize` on the event loop (`authorize.start_on_loop`, on PostgreSQL and SQLite),
and every way it hands over to the threaded `start`: the login transaction it stores is
the one the pages and the resume use, an error it answers writes nothing, and a request
that needs the database's view of the browser or the client goes to the thread.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from idp.crypto import token_digest
from idp.models import LoginTransaction
from idp.oauth import client_cache
from idp.oauth.acr import ACR_MFA
from tests.conftest import LiveServer
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    oauth_client,
    pkce_pair,
    redirect_params,
    register_client,
    signed_in_browser,
    verify_id_token,
)
from tests.flows.pages import write_lock_held_elsewhere
from tests.flows.signin import complete_sign_in, start_sign_in
from tests.flows.test_statement_counts import statements

VERIFIER, CHALLENGE = pkce_pair()


@pytest.fixture
def app(live_server: LiveServer) -> RegisteredClient:
    app = register_client(live_server, client_id="web-app")
    # The first request reads the client (the threaded path) and caches it.
    with httpx.Client() as browser:
        start_sign_in(live_server, app, browser)
    return app


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as client:
        yield client


def tx_of(response: httpx.Response) -> str:
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))["tx"]


def transactions_stored(server: LiveServer) -> int:
    with server.services.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(LoginTransaction)) or 0)


def test_the_usual_request_sends_nothing_through_the_engine(
    live_server: LiveServer, app: RegisteredClient, person: Person, browser: httpx.Client
) -> None:
    before = dt.datetime.now(dt.UTC)
    with statements(live_server) as sent:
        started = start_sign_in(live_server, app, browser, nonce="n-1", acr_values=ACR_MFA)
    assert sent == []  # the transaction's INSERT over `idp.async_db` or `idp.loop_sqlite`
    # The row is what the threaded path stores: the validated parameters, no `amr`.
    with live_server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(tx_of(started.response)))
        assert row is not None
        assert row.client_id == app.client_id
        assert row.stage == "password"
        assert row.account_id is None
        assert row.amr == []
        assert len(row.csrf_token) == 43
        assert row.params["nonce"] == "n-1"
        assert row.params["acr_values"] == ACR_MFA
        assert row.params["code_challenge_method"] == "S256"
        assert row.params["state"] == started.state
        lifetime = dt.timedelta(seconds=live_server.services.settings.login_transaction_seconds)
        assert before <= row.created_at <= dt.datetime.now(dt.UTC)
        assert row.expires_at == row.created_at + lifetime
    # And the journey goes on from it to tokens.
    back = complete_sign_in(
        browser,
        started.response,
        email=person.email,
        password=person.password,
        totp_secret=person.totp_secret,
    )
    got = redirect_params(back)
    assert got["state"] == started.state
    token = oauth_client(live_server, app).fetch_token(
        f"{live_server.url}/token", code=got["code"], code_verifier=started.code_verifier
    )
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert claims["sub"] == person.account_id
    assert claims["nonce"] == "n-1"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_held_write_lock_sends_the_request_to_the_thread(
    live_server: LiveServer, app: RegisteredClient, browser: httpx.Client
) -> None:
    with write_lock_held_elsewhere(live_server), statements(live_server) as sent:
        started = start_sign_in(live_server, app, browser, nonce="n-1")
    assert "INSERT" in sent  # the thread's, once the lock was free
    with live_server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(tx_of(started.response)))
        assert row is not None
        assert (row.stage, row.params["nonce"]) == ("password", "n-1")


def _authorize(
    server: LiveServer, app: RegisteredClient, browser: httpx.Client, **params: str
) -> httpx.Response:
    query = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uri,
        "scope": "openid",
        "state": "s-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **params,
    }
    return browser.get(f"{server.url}/authorize", params=query)


def test_errors_are_answered_as_the_threaded_path_answers_and_write_nothing(
    live_server: LiveServer, app: RegisteredClient, browser: httpx.Client
) -> None:
    stored = transactions_stored(live_server)
    with statements(live_server) as sent:
        # Back to the client, with its state: nobody is signed in, nothing may be shown.
        none = redirect_params(_authorize(live_server, app, browser, prompt="none"))
        bad_mode = redirect_params(_authorize(live_server, app, browser, response_mode="x"))
        by_value = redirect_params(_authorize(live_server, app, browser, request="e.y.z"))
        no_pkce = redirect_params(_authorize(live_server, app, browser, code_challenge=""))
        # Shown here: the redirect URI is not the client's.
        foreign = _authorize(live_server, app, browser, redirect_uri="https://evil.example/cb")
    assert none["error"] == "login_required"
    assert bad_mode["error"] == "invalid_request"
    assert by_value["error"] == "request_not_supported"
    assert no_pkce["error"] == "invalid_request"
    assert all(got["state"] == "s-1" for got in (none, bad_mode, by_value, no_pkce))
    assert foreign.status_code == 400
    assert "location" not in foreign.headers
    assert sent == []
    assert transactions_stored(live_server) == stored


def test_a_browser_with_a_session_is_answered_in_a_thread(
    live_server: LiveServer, app: RegisteredClient, person: Person
) -> None:
    """The session is read (and may sign the person in without a page): single sign-on
    issues the code straight away."""
    with signed_in_browser(live_server, person) as browser, statements(live_server) as sent:
        got = redirect_params(_authorize(live_server, app, browser))
    assert "SELECT" in sent  # the session, read with the threaded path's session
    assert "code" in got
    assert got["state"] == "s-1"


def test_a_stale_session_cookie_is_read_in_a_thread_and_signs_nobody_in(
    live_server: LiveServer, app: RegisteredClient, browser: httpx.Client
) -> None:
    from idp.accounts.sessions import session_cookie_name

    name = session_cookie_name(live_server.services.settings)
    browser.cookies.set(name, "not-a-session", domain="127.0.0.1")
    with statements(live_server) as sent:
        response = _authorize(live_server, app, browser)
    assert "SELECT" in sent
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin?tx=")


def test_a_client_not_cached_is_read_in_a_thread(
    live_server: LiveServer, app: RegisteredClient, browser: httpx.Client
) -> None:
    client_cache.invalidate_all()
    with statements(live_server) as sent:
        started = start_sign_in(live_server, app, browser)
    assert "SELECT" in sent  # the client
    assert "INSERT" in sent  # and the transaction, in the thread's transaction
    with live_server.services.sessions() as db:
        assert db.get(LoginTransaction, token_digest(tx_of(started.response))) is not None


def test_an_id_token_hint_is_checked_as_ever(
    live_server: LiveServer, app: RegisteredClient, person: Person, browser: httpx.Client
) -> None:
    """A request with a hint goes to the thread (the hint is verified against the
    keyring, which may need reloading): a bad one is refused, a good one for nobody
    signed in here starts the sign-in."""
    got = redirect_params(_authorize(live_server, app, browser, id_token_hint="e.y.z"))
    assert got["error"] == "invalid_request"
    with signed_in_browser(live_server, person) as signed_in:
        issued = redirect_params(_authorize(live_server, app, signed_in, nonce="n"))
    token = oauth_client(live_server, app).fetch_token(
        f"{live_server.url}/token",
        code=issued["code"],
        code_verifier=VERIFIER,
    )
    with statements(live_server) as sent:
        hinted = _authorize(live_server, app, browser, id_token_hint=token["id_token"])
    assert "INSERT" in sent  # the transaction, stored by the thread's session
    assert hinted.status_code == 303
    assert hinted.headers["location"].startswith("/signin?tx=")
