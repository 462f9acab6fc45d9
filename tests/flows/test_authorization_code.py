"""The authorization code flow with PKCE over real HTTP, driven by Authlib's client and
checked with joserfc against the published JWKS (RFC 6749 4.1, RFC 7636, OIDC Core 3.1).

These tests start from a signed-in browser (single sign-on); the journeys through the
hosted sign-in pages are in `test_sign_in_journeys.py`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.oidc.core.util import create_half_hash
from sqlalchemy import select

from idp.models import AuditEvent, utcnow
from idp.oauth.acr import ACR_MFA
from idp.oauth.server import get_oauth_server
from tests.conftest import LiveServer
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    discovery,
    introspect,
    oauth_client,
    redirect_params,
    register_client,
    register_person,
    signed_in_browser,
    verify_id_token,
)

VERIFIER = "v" * 20 + "-verifier-of-enough-length-for-rfc7636-" + "x" * 10


@pytest.fixture
def browser(live_server: LiveServer, person: Person) -> httpx.Client:
    return signed_in_browser(live_server, person)


def authorization_url(server: LiveServer, app: RegisteredClient, **params: Any) -> str:
    client = oauth_client(server, app, code_challenge_method="S256")
    params.setdefault("code_verifier", VERIFIER)
    params.setdefault("state", "state-123")
    url, _ = client.create_authorization_url(f"{server.url}/authorize", **params)
    return str(url)


def get_code(
    server: LiveServer, app: RegisteredClient, browser: httpx.Client, **params: Any
) -> str:
    response = browser.get(authorization_url(server, app, **params))
    got = redirect_params(response)
    assert response.headers["location"].startswith(app.redirect_uri + "?")
    assert got["state"] == params.get("state", "state-123")
    assert got["iss"] == server.url  # RFC 9207
    return got["code"]


def exchange(server: LiveServer, app: RegisteredClient, code: str, **kwargs: Any) -> dict[str, Any]:
    client = oauth_client(server, app)
    kwargs.setdefault("code_verifier", VERIFIER)
    token: dict[str, Any] = client.fetch_token(f"{server.url}/token", code=code, **kwargs)
    return token


def token_error(server: LiveServer, app: RegisteredClient, **data: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/token", data=data, auth=(app.client_id, app.client_secret or "")
    )


def test_happy_flow_id_token_and_access_token(live_server, app, person, browser) -> None:
    code = get_code(live_server, app, browser, nonce="n-0S6_WzA2Mj")
    token = exchange(live_server, app, code)
    assert token["token_type"] == "Bearer"
    assert set(token["scope"].split()) == {"openid", "email", "profile"}
    assert token["refresh_token"]

    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert claims["iss"] == discovery(live_server)["issuer"] == live_server.url
    assert claims["sub"] == person.account_id
    assert person.email not in claims.values()
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["acr"] == ACR_MFA
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["sid"]
    assert isinstance(claims["auth_time"], int)
    assert claims["at_hash"] == create_half_hash(token["access_token"], "RS256").decode()

    active = introspect(live_server, app, token["access_token"])
    assert active["active"] is True
    assert active["sub"] == person.account_id
    assert active["client_id"] == app.client_id
    assert active["acr"] == ACR_MFA


def test_nonce_is_optional_and_es256_per_client(live_server, person, browser) -> None:
    app = register_client(live_server, client_id="es-app", id_token_signed_response_alg="ES256")
    code = get_code(live_server, app, browser)
    token = exchange(live_server, app, code)
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert "nonce" not in claims
    header = json.loads(base64.urlsafe_b64decode(token["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256"


def test_userinfo_get_and_post_by_scope(live_server, app, person, browser) -> None:
    token = exchange(live_server, app, get_code(live_server, app, browser))
    access = token["access_token"]
    got = httpx.get(f"{live_server.url}/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert got.status_code == 200
    assert got.json()["sub"] == person.account_id
    assert got.json()["email"] == person.email
    assert got.json()["email_verified"] is True
    assert "updated_at" in got.json()
    posted = httpx.post(f"{live_server.url}/userinfo", data={"access_token": access})
    assert posted.json() == got.json()

    narrow = register_client(live_server, client_id="narrow", scope="openid")
    only_sub = exchange(live_server, narrow, get_code(live_server, narrow, browser))
    body = httpx.get(
        f"{live_server.url}/userinfo",
        headers={"Authorization": f"Bearer {only_sub['access_token']}"},
    ).json()
    assert body == {"sub": person.account_id}


def test_userinfo_refuses_bad_tokens(live_server, app, browser) -> None:
    token = exchange(live_server, app, get_code(live_server, app, browser))
    for value in ["garbage", token["id_token"], token["refresh_token"]]:
        response = httpx.get(
            f"{live_server.url}/userinfo", headers={"Authorization": f"Bearer {value}"}
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert 'Bearer error="invalid_token"' in response.headers["www-authenticate"]
    # RFC 6750 3.1: a request with no token at all gets a challenge without an error code.
    missing = httpx.get(f"{live_server.url}/userinfo")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"


def test_code_reuse_fails_and_revokes_the_first_tokens(live_server, app, browser) -> None:
    code = get_code(live_server, app, browser)
    first = exchange(live_server, app, code)
    with pytest.raises(OAuthError) as reuse:
        exchange(live_server, app, code)
    assert reuse.value.error == "invalid_grant"
    assert introspect(live_server, app, first["access_token"]) == {"active": False}
    assert introspect(live_server, app, first["refresh_token"]) == {"active": False}
    userinfo = httpx.get(
        f"{live_server.url}/userinfo",
        headers={"Authorization": f"Bearer {first['access_token']}"},
    )
    assert userinfo.status_code == 401
    refresh = token_error(
        live_server, app, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    assert refresh.json()["error"] == "invalid_grant"
    with live_server.services.sessions() as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.event == "oauth.grant_revoked"))
        assert [e.detail["reason"] for e in events] == ["code_reused"]


def test_expired_code_is_invalid_grant(live_server, app, browser) -> None:
    code = get_code(live_server, app, browser)
    server = get_oauth_server(live_server.services)
    moment = utcnow()
    server.now = lambda: moment + dt.timedelta(seconds=61)
    try:
        response = token_error(
            live_server,
            app,
            grant_type="authorization_code",
            code=code,
            redirect_uri=app.redirect_uri,
            code_verifier=VERIFIER,
        )
    finally:
        server.now = utcnow
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_missing_and_wrong_code_verifier(live_server, app, browser) -> None:
    code = get_code(live_server, app, browser)
    missing = token_error(
        live_server, app, grant_type="authorization_code", code=code, redirect_uri=app.redirect_uri
    )
    assert missing.json()["error"] == "invalid_request"
    code = get_code(live_server, app, browser)
    wrong = token_error(
        live_server,
        app,
        grant_type="authorization_code",
        code=code,
        redirect_uri=app.redirect_uri,
        code_verifier="w" * 50,
    )
    assert wrong.json()["error"] == "invalid_grant"
    # The refusal is committed with the redemption: the code is used up, and the right
    # verifier afterwards gets nothing either (on the event loop as in a thread).
    late = token_error(
        live_server,
        app,
        grant_type="authorization_code",
        code=code,
        redirect_uri=app.redirect_uri,
        code_verifier=VERIFIER,
    )
    assert late.json()["error"] == "invalid_grant"


def test_redirect_uri_at_token_must_match(live_server, app, browser) -> None:
    code = get_code(live_server, app, browser)
    response = token_error(
        live_server,
        app,
        grant_type="authorization_code",
        code=code,
        redirect_uri="https://app.example/other",
        code_verifier=VERIFIER,
    )
    assert response.json()["error"] == "invalid_grant"


def test_code_issued_to_another_client_is_invalid_grant(live_server, app, browser) -> None:
    other = register_client(live_server, client_id="other-app")
    code = get_code(live_server, app, browser)
    response = token_error(
        live_server,
        other,
        grant_type="authorization_code",
        code=code,
        redirect_uri=app.redirect_uri,
        code_verifier=VERIFIER,
    )
    assert response.json()["error"] == "invalid_grant"
    # The rightful client can still redeem it: a stranger cannot burn someone's code.
    assert exchange(live_server, app, code)["access_token"]


def test_plain_and_missing_code_challenge_are_refused(live_server, app, browser) -> None:
    base = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uri,
        "scope": "openid",
        "state": "s1",
    }
    for extra in (
        {"code_challenge": "c" * 43, "code_challenge_method": "plain"},
        {"code_challenge": "c" * 43},  # no method means plain (RFC 7636 4.3)
        {},  # no challenge: PKCE is required for every client (RFC 9700 2.1.1)
    ):
        response = browser.get(f"{live_server.url}/authorize", params={**base, **extra})
        got = redirect_params(response)
        assert got["error"] == "invalid_request", extra
        assert got["state"] == "s1"
        assert got["iss"] == live_server.url


def test_verifier_without_challenge_cannot_get_tokens(live_server, app, browser) -> None:
    """RFC 9700 4.8.2: a code issued without a challenge would let an attacker send any
    verifier; none is ever issued, so a verifier alone never works."""
    response = browser.get(
        f"{live_server.url}/authorize",
        params={
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": app.redirect_uri,
            "scope": "openid",
        },
    )
    assert "code" not in redirect_params(response)
    assert redirect_params(response)["error"] == "invalid_request"


def test_wrong_redirect_uri_or_unknown_client_get_an_error_page(live_server, app, browser) -> None:
    for params in (
        {"client_id": app.client_id, "redirect_uri": "https://evil.example/callback"},
        {"client_id": app.client_id, "redirect_uri": app.redirect_uri + "/"},
        {"client_id": app.client_id},
        {"client_id": "no-such-client", "redirect_uri": app.redirect_uri},
    ):
        response = browser.get(
            authorization_url(live_server, app).split("?")[0],
            params={"response_type": "code", "scope": "openid", "state": "x", **params},
            headers={"Accept": "text/html"},
        )
        assert response.status_code in (400, 401), params
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")


def test_unsupported_response_type_goes_back_to_the_client(live_server, app, browser) -> None:
    url = authorization_url(live_server, app).replace("response_type=code", "response_type=token")
    got = redirect_params(browser.get(url))
    assert got["error"] == "unsupported_response_type"
    assert got["iss"] == live_server.url


def test_prompt_none_without_session_is_login_required(live_server, app) -> None:
    with httpx.Client() as stranger:
        response = stranger.get(authorization_url(live_server, app, prompt="none"))
    got = redirect_params(response)
    assert got == {
        "error": "login_required",
        "state": "state-123",
        "iss": live_server.url,
    } | ({"error_description": got["error_description"]} if "error_description" in got else {})


def test_prompt_none_with_session_issues_a_code(live_server, app, browser) -> None:
    code = get_code(live_server, app, browser, prompt="none")
    assert exchange(live_server, app, code)["id_token"]


def test_without_session_the_browser_goes_to_sign_in(live_server, app) -> None:
    with httpx.Client() as stranger:
        response = stranger.get(authorization_url(live_server, app, login_hint="pat@example.org"))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin?tx=")


@pytest.mark.parametrize("params", [{"prompt": "login"}, {"max_age": "0"}])
def test_prompt_login_and_max_age_zero_force_sign_in(live_server, app, browser, params) -> None:
    response = browser.get(authorization_url(live_server, app, **params))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin?tx=")


def test_max_age_exceeded_needs_sign_in_and_within_it_is_sso(live_server, app, person) -> None:
    old = signed_in_browser(live_server, person, auth_time=utcnow() - dt.timedelta(seconds=120))
    response = old.get(authorization_url(live_server, app, max_age="60"))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin?tx=")
    with_prompt_none = old.get(authorization_url(live_server, app, max_age="60", prompt="none"))
    assert redirect_params(with_prompt_none)["error"] == "login_required"
    code = get_code(live_server, app, old, max_age="10000")
    claims = verify_id_token(
        live_server, exchange(live_server, app, code)["id_token"], client_id=app.client_id
    )
    assert claims["auth_time"] <= int(utcnow().timestamp()) - 119


def test_request_objects_are_not_supported(live_server, app, browser) -> None:
    got = redirect_params(browser.get(authorization_url(live_server, app, request="e30.e30.")))
    assert got["error"] == "request_not_supported"
    got = redirect_params(
        browser.get(authorization_url(live_server, app, request_uri="https://x.example/r"))
    )
    assert got["error"] == "request_uri_not_supported"
    assert got["iss"] == live_server.url


def test_unknown_parameters_are_ignored(live_server, app, browser) -> None:
    code = get_code(live_server, app, browser, foo="bar", claims_locales="cy")
    assert exchange(live_server, app, code)["access_token"]


def test_post_to_the_authorization_endpoint(live_server, app, browser) -> None:
    from urllib.parse import parse_qsl, urlsplit

    url = authorization_url(live_server, app)
    form = dict(parse_qsl(urlsplit(url).query))
    response = browser.post(f"{live_server.url}/authorize", data=form)
    code = redirect_params(response)["code"]
    assert exchange(live_server, app, code)["access_token"]


def test_form_post_response_mode(live_server, app, browser) -> None:
    response = browser.get(authorization_url(live_server, app, response_mode="form_post"))
    assert response.status_code == 200
    html = response.text
    assert f'action="{app.redirect_uri}"' in html
    assert 'name="code"' in html
    assert 'name="state" value="state-123"' in html
    assert f'name="iss" value="{live_server.url}"' in html
    assert "<script>" not in html  # CSP script-src 'self': the submit script is a file
    assert "Continue" in html


def test_unknown_acr_values_cannot_be_met(live_server, app, browser) -> None:
    got = redirect_params(
        browser.get(authorization_url(live_server, app, acr_values="urn:example:loa:4"))
    )
    assert got["error"] == "unmet_authentication_requirements"


def test_step_up_with_prompt_none_is_unmet(live_server, app, person) -> None:
    password_only = signed_in_browser(live_server, person, amr=("pwd",))
    got = redirect_params(
        password_only.get(authorization_url(live_server, app, acr_values=ACR_MFA, prompt="none"))
    )
    assert got["error"] == "unmet_authentication_requirements"
    stepped = password_only.get(authorization_url(live_server, app, acr_values=ACR_MFA))
    assert stepped.status_code == 303
    assert stepped.headers["location"].startswith("/signin?tx=")


def test_id_token_hint_for_another_person_needs_sign_in(live_server, app, browser) -> None:
    token = exchange(live_server, app, get_code(live_server, app, browser))
    code = get_code(live_server, app, browser, id_token_hint=token["id_token"], prompt="none")
    assert code
    someone = register_person(live_server, email="sam@example.org")
    other = signed_in_browser(live_server, someone)
    got = redirect_params(
        other.get(
            authorization_url(live_server, app, id_token_hint=token["id_token"], prompt="none")
        )
    )
    assert got["error"] == "login_required"
    got = redirect_params(
        other.get(authorization_url(live_server, app, id_token_hint="not.a.token"))
    )
    assert got["error"] == "invalid_request"


def test_third_party_client_needs_consent(live_server, browser) -> None:
    app = register_client(live_server, client_id="third", first_party=False)
    got = redirect_params(browser.get(authorization_url(live_server, app, prompt="none")))
    assert got["error"] == "consent_required"
    response = browser.get(authorization_url(live_server, app))
    assert response.headers["location"].startswith("/signin?tx=")


def test_client_without_the_code_grant_gets_no_code(live_server, browser) -> None:
    machine = register_client(
        live_server, client_id="machine", grant_types=["client_credentials"], scope="openid x"
    )
    got = redirect_params(browser.get(authorization_url(live_server, machine)))
    assert got["error"] == "unauthorized_client"
    assert "code" not in got


def test_racing_redemptions_of_one_code_issue_once(live_server, app, browser) -> None:
    from concurrent.futures import ThreadPoolExecutor

    code = get_code(live_server, app, browser)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": app.redirect_uri,
        "code_verifier": VERIFIER,
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(
            pool.map(
                lambda _: httpx.post(
                    f"{live_server.url}/token",
                    data=data,
                    auth=(app.client_id, app.client_secret or ""),
                    timeout=30,
                ),
                range(4),
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 400, 400, 400]
    issued = next(r.json() for r in responses if r.status_code == 200)
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
    # The losers' attempts count as reuse: what the winner got is revoked.
    assert introspect(live_server, app, issued["access_token"]) == {"active": False}
