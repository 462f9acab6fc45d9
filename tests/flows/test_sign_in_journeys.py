"""Whole journeys: a relying party sends a browser to `/authorize`, the person signs in
on the hosted pages, and the client gets its code and tokens (OIDC Core 3.1.2.1)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest

from idp.oauth.acr import ACR_MFA
from tests.conftest import LiveServer
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
from tests.flows.signin import complete_sign_in, sign_in, sign_in_until_resume, start_sign_in


def sign_in_for_tokens(
    server: LiveServer,
    app: RegisteredClient,
    person: Person,
    browser: httpx.Client,
    **params: str,
) -> dict[str, Any]:
    started = start_sign_in(server, app, browser, **params)
    back = complete_sign_in(
        browser,
        started.response,
        email=person.email,
        password=person.password,
        totp_secret=person.totp_secret,
    )
    got = redirect_params(back)
    assert got["state"] == started.state
    assert got["iss"] == server.url
    token: dict[str, Any] = oauth_client(server, app).fetch_token(
        f"{server.url}/token", code=got["code"], code_verifier=started.code_verifier
    )
    return token


def test_sign_in_then_single_sign_on(live_server, app, person) -> None:
    with httpx.Client() as browser:
        token = sign_in_for_tokens(live_server, app, person, browser, nonce="abc")
        claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
        assert claims["sub"] == person.account_id
        assert claims["nonce"] == "abc"
        assert claims["acr"] == ACR_MFA
        assert set(claims["amr"]) >= {"pwd", "otp"}
        # Second app visit: the session signs the person in without any page.
        url, _ = oauth_client(
            live_server, app, code_challenge_method="S256"
        ).create_authorization_url(
            f"{live_server.url}/authorize", code_verifier="x" * 43, state="again", prompt="none"
        )
        again = redirect_params(browser.get(str(url)))
        assert again["state"] == "again"
        assert "code" in again


def test_max_age_exceeded_means_sign_in_again_with_a_new_auth_time(
    live_server, app, person
) -> None:
    with httpx.Client() as browser:
        first = sign_in_for_tokens(live_server, app, person, browser)
        before = verify_id_token(live_server, first["id_token"], client_id=app.client_id)
        time.sleep(2.1)
        # OIDC Core 3.1.2.1: max_age=1 is exceeded, so the pages are shown again.
        second = sign_in_for_tokens(live_server, app, person, browser, max_age="1")
        after = verify_id_token(live_server, second["id_token"], client_id=app.client_id)
        assert after["auth_time"] >= before["auth_time"] + 2
        assert after["sid"] != before["sid"]  # a new session at sign-in (ASVS 7.2.4)


def test_prompt_login_forces_sign_in(live_server, app, person) -> None:
    with httpx.Client() as browser:
        sign_in_for_tokens(live_server, app, person, browser)
        # start_sign_in asserts the 303 to the pages despite the live session.
        token = sign_in_for_tokens(live_server, app, person, browser, prompt="login")
        assert token["id_token"]


def test_a_transaction_resumes_once_and_only_in_its_browser(live_server, app, person) -> None:
    other = register_person(live_server, email="sam@example.org")
    done = sign_in_until_resume(live_server, app, person)
    browser, resume = done.browser, done.resume_url
    try:
        with httpx.Client() as thief_browser:
            # Another browser, signed in as someone else, cannot use the completed txid.
            thief_start = start_sign_in(live_server, app, thief_browser)
            complete_sign_in(
                thief_browser,
                thief_start.response,
                email=other.email,
                password=other.password,
                totp_secret=other.totp_secret,
            )
            stolen = thief_browser.get(resume)
            assert stolen.status_code == 400
            assert "location" not in stolen.headers
        # The rightful browser still can, once.
        assert "code" in redirect_params(browser.get(resume))
        again = browser.get(resume, headers={"Accept": "text/html"})
        assert again.status_code == 400
        assert "location" not in again.headers
        assert "Start again" in again.text
    finally:
        browser.close()
    assert httpx.get(f"{live_server.url}/authorize/resume?tx=made-up").status_code == 400


def test_expired_transaction_cannot_resume(live_server, app, person) -> None:
    from idp.models import utcnow
    from idp.oauth.server import get_oauth_server

    with httpx.Client() as browser:
        started = start_sign_in(live_server, app, browser)
        server = get_oauth_server(live_server.services)
        later = utcnow() + dt.timedelta(
            seconds=live_server.services.settings.login_transaction_seconds + 1
        )
        server.now = lambda: later
        try:
            response = browser.get(f"{live_server.url}/authorize/resume?tx={started.tx}")
        finally:
            server.now = utcnow
        assert response.status_code == 400
        assert "location" not in response.headers


@pytest.mark.parametrize("decision", ["allow", "deny"])
def test_third_party_app_asks_for_consent(live_server, person, decision) -> None:
    third = register_client(live_server, client_id="third-party", first_party=False)
    with httpx.Client() as browser:
        started = start_sign_in(live_server, third, browser)
        result = sign_in(
            browser,
            started.response,
            email=person.email,
            password=person.password,
            totp_secret=person.totp_secret,
            consent=decision,  # type: ignore[arg-type]
        )
    assert "consent" in result.pages
    got = redirect_params(result.response)
    assert got["state"] == started.state
    assert got["iss"] == live_server.url
    if decision == "allow":
        assert "code" in got
    else:
        assert got["error"] == "access_denied"
        assert "code" not in got


def test_step_up_asks_only_for_the_second_factor(live_server, app, person) -> None:
    browser = signed_in_browser(live_server, person, amr=("pwd",))
    started = start_sign_in(live_server, app, browser, acr_values=ACR_MFA)
    result = sign_in(
        browser,
        started.response,
        email=person.email,
        password=person.password,
        totp_secret=person.totp_secret,
    )
    assert result.pages == ["code"]  # RFC 9470: a fresh second factor, not a new password
    got = redirect_params(result.response)
    token = oauth_client(live_server, app).fetch_token(
        f"{live_server.url}/token", code=got["code"], code_verifier=started.code_verifier
    )
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert claims["acr"] == ACR_MFA
    assert "otp" in claims["amr"]
