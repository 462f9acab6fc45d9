"""RP-initiated logout over real HTTP (OpenID Connect RP-Initiated Logout 1.0)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.flows.oidc import (
    LOGOUT_URI,
    RegisteredClient,
    oauth_client,
    redirect_params,
    register_person,
    signed_in_browser,
)

VERIFIER = "q" * 60


def authorize(server: LiveServer, app: RegisteredClient, browser: httpx.Client, **kw: Any):  # type: ignore[no-untyped-def]
    client = oauth_client(server, app, code_challenge_method="S256")
    url, _ = client.create_authorization_url(
        f"{server.url}/authorize", code_verifier=VERIFIER, state="s", **kw
    )
    return browser.get(str(url))


def id_token(server: LiveServer, app: RegisteredClient, browser: httpx.Client) -> str:
    code = redirect_params(authorize(server, app, browser))["code"]
    token = oauth_client(server, app).fetch_token(
        f"{server.url}/token", code=code, code_verifier=VERIFIER
    )
    value: str = token["id_token"]
    return value


def test_logout_with_hint_redirects_with_state_and_ends_the_session(
    live_server, app, person
) -> None:
    browser = signed_in_browser(live_server, person)
    hint = id_token(live_server, app, browser)
    response = browser.get(
        f"{live_server.url}/logout",
        params={"id_token_hint": hint, "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{LOGOUT_URI}?state=bye"
    assert "idp-session=" in response.headers["set-cookie"]  # cleared
    # The provider's session is over: prompt=none now needs a login.
    after = authorize(live_server, app, browser, prompt="none")
    assert redirect_params(after)["error"] == "login_required"


def test_unregistered_post_logout_redirect_uri_is_never_followed(live_server, app, person) -> None:
    browser = signed_in_browser(live_server, person)
    hint = id_token(live_server, app, browser)
    for uri in ("https://evil.example/", LOGOUT_URI + "/x", app.redirect_uri):
        response = browser.get(
            f"{live_server.url}/logout",
            params={"id_token_hint": hint, "post_logout_redirect_uri": uri},
        )
        assert response.status_code == 400
        assert "location" not in response.headers
    # Without a client to check it against, no redirect either.
    response = browser.get(
        f"{live_server.url}/logout", params={"post_logout_redirect_uri": LOGOUT_URI}
    )
    assert response.status_code == 400
    # The session survived the refused requests.
    assert "code" in redirect_params(authorize(live_server, app, browser, prompt="none"))


def test_logout_without_hint_asks_first(live_server, app, person) -> None:
    browser = signed_in_browser(live_server, person)
    response = browser.get(f"{live_server.url}/logout")
    assert response.status_code == 200
    assert 'name="confirm"' in response.text
    assert "code" in redirect_params(authorize(live_server, app, browser, prompt="none"))
    # A cross-site POST cannot confirm on the person's behalf.
    forged = browser.post(
        f"{live_server.url}/logout",
        data={"confirm": "yes"},
        headers={"Origin": "https://evil.example"},
    )
    assert 'name="confirm"' in forged.text
    assert "code" in redirect_params(authorize(live_server, app, browser, prompt="none"))
    confirmed = browser.post(
        f"{live_server.url}/logout",
        data={"confirm": "yes", "client_id": app.client_id, "post_logout_redirect_uri": LOGOUT_URI},
        headers={"Origin": live_server.url},
    )
    assert confirmed.status_code == 303
    assert confirmed.headers["location"] == LOGOUT_URI
    assert redirect_params(authorize(live_server, app, browser, prompt="none"))["error"] == (
        "login_required"
    )


def test_hint_for_someone_else_does_not_end_this_session(live_server, app, person) -> None:
    browser = signed_in_browser(live_server, person)
    other = signed_in_browser(live_server, register_person(live_server, email="sam@example.org"))
    others_hint = id_token(live_server, app, other)
    response = browser.get(f"{live_server.url}/logout", params={"id_token_hint": others_hint})
    assert 'name="confirm"' in response.text
    assert "code" in redirect_params(authorize(live_server, app, browser, prompt="none"))
    forged = browser.get(f"{live_server.url}/logout", params={"id_token_hint": "a.b.c"})
    assert forged.status_code == 400


def test_logout_without_session_still_returns_to_the_app(live_server, app, person) -> None:
    browser = signed_in_browser(live_server, person)
    hint = id_token(live_server, app, browser)
    with httpx.Client() as fresh:
        response = fresh.get(
            f"{live_server.url}/logout",
            params={"id_token_hint": hint, "post_logout_redirect_uri": LOGOUT_URI},
        )
    assert response.status_code == 303
    assert response.headers["location"] == LOGOUT_URI
