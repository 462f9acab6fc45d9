"""The consent page for clients that are not first-party (issue 3 point 4), over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from idp.crypto import token_digest
from idp.models import LoginTransaction
from tests.conftest import LiveServer
from tests.flows.oidc import RegisteredClient, register_client, register_person
from tests.flows.signin import parse_page, sign_in, start_sign_in

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def third_party(live_server: LiveServer) -> RegisteredClient:
    return register_client(
        live_server, name="Audit Tools Ltd", service_name="Audit Tools", first_party=False
    )


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as client:
        yield client


def query(response: httpx.Response) -> dict[str, list[str]]:
    return parse_qs(urlsplit(response.headers["location"]).query)


def test_consent_page_lists_what_the_app_asks_for(live_server, third_party, browser) -> None:
    person = register_person(live_server)
    started = start_sign_in(live_server, third_party, browser, scope="openid email")
    result = sign_in(
        browser, started.response, email=person.email, password=PASSWORD,
        totp_secret=person.totp_secret,
    )  # fmt: skip
    assert result.pages == ["password", "code", "consent"]
    assert "code" in query(result.response)
    with live_server.services.sessions() as db:
        assert db.get(LoginTransaction, token_digest(started.tx)).consented_at is not None
    # What the page said, seen on a fresh journey that stops on it.
    other = start_sign_in(live_server, third_party, browser, scope="openid email", prompt="login")
    with pytest.raises(AssertionError):
        sign_in(
            browser, other.response, email=person.email, password=PASSWORD,
            totp_secret=person.totp_secret, max_steps=4,
        )  # fmt: skip
    page = browser.get(f"{live_server.url}/signin/consent?tx={other.tx}")
    assert "Allow Audit Tools to use your details?" in page.text
    assert "your email address" in page.text
    assert "your name" not in page.text  # `profile` was not asked for
    assert live_server.services.settings.support_contact in page.text


def test_cancel_sends_access_denied_to_the_client(live_server, third_party, browser) -> None:
    person = register_person(live_server)
    started = start_sign_in(live_server, third_party, browser)
    result = sign_in(
        browser, started.response, email=person.email, password=PASSWORD,
        totp_secret=person.totp_secret, consent="deny",
    )  # fmt: skip
    got = query(result.response)
    assert got["error"] == ["access_denied"]
    assert "code" not in got
    assert got["state"] == [started.state]


def test_consent_without_a_choice_is_explained(live_server, third_party, browser) -> None:
    person = register_person(live_server)
    started = start_sign_in(live_server, third_party, browser)
    with pytest.raises(AssertionError):
        sign_in(
            browser, started.response, email=person.email, password=PASSWORD,
            totp_secret=person.totp_secret, max_steps=4,
        )  # fmt: skip
    page = parse_page(browser.get(f"{live_server.url}/signin/consent?tx={started.tx}").text)
    form = page.form_with("decision")
    assert form is not None
    posted = browser.post(
        f"{live_server.url}/signin/consent?tx={started.tx}",
        data={**form.fields, "decision": "maybe"},
    )
    assert posted.status_code == 303
    shown = parse_page(browser.get(live_server.url + posted.headers["location"]).text)
    assert "Choose whether to allow or cancel" in shown.errors
    with live_server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(started.tx))
        assert (row.completed_at, row.consented_at) == (None, None)


def test_consent_only_journey_keeps_how_the_person_signed_in(live_server, third_party) -> None:
    """A signed-in person meeting a new third-party app sees only the consent page, and
    the app learns the session's `amr` (no downgrade to a journey that proved nothing)."""
    from tests.flows.oidc import oauth_client, signed_in_browser, verify_id_token

    person = register_person(live_server)
    browser = signed_in_browser(live_server, person)
    started = start_sign_in(live_server, third_party, browser)
    result = sign_in(browser, started.response, email="unused", password="unused")
    assert result.pages == ["consent"]
    code = query(result.response)["code"][0]
    token = oauth_client(live_server, third_party).fetch_token(
        f"{live_server.url}/token", code=code, code_verifier=started.code_verifier
    )
    claims = verify_id_token(live_server, token["id_token"], client_id=third_party.client_id)
    assert {"pwd", "otp"} <= set(claims["amr"])
    browser.close()


def test_consent_only_journey_without_the_session_starts_over(live_server, third_party) -> None:
    from idp.models import BrowserSession
    from tests.flows.oidc import signed_in_browser

    person = register_person(live_server)
    browser = signed_in_browser(live_server, person)
    started = start_sign_in(live_server, third_party, browser)
    page = parse_page(browser.get(f"{live_server.url}/signin/consent?tx={started.tx}").text)
    with live_server.services.sessions() as db, db.begin():
        for session in db.query(BrowserSession):
            db.delete(session)
    form = page.form_with("decision")
    posted = browser.post(
        f"{live_server.url}/signin/consent?tx={started.tx}",
        data={**form.fields, "decision": "allow"},
    )
    assert posted.headers["location"] == f"/signin?tx={started.tx}"
    with live_server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(started.tx))
        assert (row.completed_at, row.account_id, row.consented_at) == (None, None, None)
    browser.close()
