"""Refresh, introspection, revocation and client authentication over real HTTP
(RFC 6749 6, RFC 9700 4.14, RFC 7662, RFC 7009, OIDC Core 9)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import RSAKey

from idp.models import utcnow
from idp.oauth.server import get_oauth_server
from tests.conftest import LiveServer
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    introspect,
    oauth_client,
    redirect_params,
    register_client,
    signed_in_browser,
    verify_id_token,
)

VERIFIER = "k" * 64


@pytest.fixture
def browser(live_server: LiveServer, person: Person) -> httpx.Client:
    return signed_in_browser(live_server, person)


def code_for(server: LiveServer, client: OAuth2Client, browser: httpx.Client) -> str:
    url, _ = client.create_authorization_url(
        f"{server.url}/authorize", code_verifier=VERIFIER, state="s"
    )
    return redirect_params(browser.get(str(url)))["code"]


def tokens_for(
    server: LiveServer, client: OAuth2Client, browser: httpx.Client, **kwargs: Any
) -> dict[str, Any]:
    code = code_for(server, client, browser)
    token: dict[str, Any] = client.fetch_token(
        f"{server.url}/token", code=code, code_verifier=VERIFIER, **kwargs
    )
    return token


def pkce_client(server: LiveServer, app: RegisteredClient, **kwargs: Any) -> OAuth2Client:
    return oauth_client(server, app, code_challenge_method="S256", **kwargs)


def redeem(server: LiveServer, app: RegisteredClient, code: str) -> httpx.Response:
    """Redeem `code` (made by `code_for`) as `app`, by hand."""
    return httpx.post(
        f"{server.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": app.redirect_uri,
            "code_verifier": VERIFIER,
        },
        auth=(app.client_id, app.client_secret or ""),
    )


def refresh(server: LiveServer, app: RegisteredClient, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=(app.client_id, app.client_secret or ""),
    )


def test_a_refresh_token_in_the_wrong_hands_cannot_be_used_up(live_server, app, browser) -> None:
    """The client authenticates before its token is claimed: a caller with a stolen
    refresh token but a wrong secret, or another client, changes nothing (no rotation,
    and so no reuse that would revoke the rightful client's grant)."""
    token = tokens_for(live_server, pkce_client(live_server, app), browser)["refresh_token"]
    assert refresh(live_server, app, "not-a-refresh-token").json()["error"] == "invalid_grant"
    stolen = RegisteredClient(app.client_id, "a-guessed-secret")
    assert refresh(live_server, stolen, token).status_code == 401
    other = register_client(live_server, client_id="other-app")
    assert refresh(live_server, other, token).json()["error"] == "invalid_grant"
    rotated = refresh(live_server, app, token)
    assert rotated.status_code == 200, rotated.text
    assert refresh(live_server, app, rotated.json()["refresh_token"]).status_code == 200


def test_a_code_in_the_wrong_hands_cannot_be_used_up(live_server, app, browser) -> None:
    """As for refresh tokens: the client authenticates before its code is redeemed."""
    code = code_for(live_server, pkce_client(live_server, app), browser)
    stolen = RegisteredClient(app.client_id, "a-guessed-secret", app.redirect_uri)
    assert redeem(live_server, stolen, code).status_code == 401
    redeemed = redeem(live_server, app, code)
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["id_token"]
    reused = redeem(live_server, app, code)  # and a second redemption still revokes
    assert reused.json()["error"] == "invalid_grant"
    assert introspect(live_server, app, redeemed.json()["access_token"]) == {"active": False}


def test_refresh_rotates_and_keeps_the_authentication(live_server, app, browser) -> None:
    client = pkce_client(live_server, app)
    first = tokens_for(live_server, client, browser)
    second = client.refresh_token(f"{live_server.url}/token", refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    old = verify_id_token(live_server, first["id_token"], client_id=app.client_id)
    new = verify_id_token(live_server, second["id_token"], client_id=app.client_id)
    assert new["sub"] == old["sub"]
    assert new["auth_time"] == old["auth_time"]
    assert new["acr"] == old["acr"]
    assert introspect(live_server, app, first["refresh_token"]) == {"active": False}
    assert introspect(live_server, app, second["refresh_token"])["active"] is True
    narrower = client.refresh_token(
        f"{live_server.url}/token", refresh_token=second["refresh_token"], scope="openid"
    )
    assert narrower["scope"] == "openid"


def test_refresh_reuse_revokes_the_whole_grant(live_server, app, browser) -> None:
    client = pkce_client(live_server, app)
    first = tokens_for(live_server, client, browser)
    second = client.refresh_token(f"{live_server.url}/token", refresh_token=first["refresh_token"])
    reuse = refresh(live_server, app, first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # The thief's replay ends the family: the legitimate client's tokens die too.
    assert refresh(live_server, app, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert introspect(live_server, app, second["access_token"]) == {"active": False}
    assert introspect(live_server, app, first["access_token"]) == {"active": False}


def test_refresh_by_another_client_is_refused(live_server, app, browser) -> None:
    other = register_client(live_server, client_id="other-app")
    first = tokens_for(live_server, pkce_client(live_server, app), browser)
    stolen = refresh(live_server, other, first["refresh_token"])
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    # Bound to its client: the owner's token still works, untouched by the attempt.
    assert refresh(live_server, app, first["refresh_token"]).status_code == 200


def test_refresh_idle_and_absolute_lifetimes(live_server, app, browser) -> None:
    server = get_oauth_server(live_server.services)
    settings = live_server.services.settings
    first = tokens_for(live_server, pkce_client(live_server, app), browser)
    start = utcnow()
    try:
        server.now = lambda: start + dt.timedelta(seconds=settings.refresh_token_idle_seconds + 5)
        assert refresh(live_server, app, first["refresh_token"]).json()["error"] == "invalid_grant"
    finally:
        server.now = utcnow
    second = tokens_for(live_server, pkce_client(live_server, app), browser)
    # Used within the idle limit every time, but past the absolute limit since sign-in.
    step = dt.timedelta(seconds=settings.refresh_token_idle_seconds - 60)
    current, moment = second["refresh_token"], start
    try:
        while True:
            moment += step
            server.now = lambda at=moment: at  # type: ignore[misc]
            response = refresh(live_server, app, current)
            if moment - start > dt.timedelta(seconds=settings.refresh_token_absolute_seconds):
                assert response.json()["error"] == "invalid_grant"
                break
            assert response.status_code == 200, response.text
            current = response.json()["refresh_token"]
    finally:
        server.now = utcnow


def test_client_secret_post(live_server, browser) -> None:
    app = register_client(
        live_server, client_id="post-app", token_endpoint_auth_method="client_secret_post"
    )
    client = pkce_client(live_server, app, token_endpoint_auth_method="client_secret_post")
    assert tokens_for(live_server, client, browser)["id_token"]
    # The registered method only: basic is refused for a client_secret_post client.
    basic = pkce_client(live_server, app)
    with pytest.raises(OAuthError) as refused:
        tokens_for(live_server, basic, browser)
    assert refused.value.error == "invalid_client"


def test_public_client_with_pkce_and_no_secret(live_server, browser) -> None:
    app = register_client(live_server, client_id="native", public=True)
    assert app.client_secret is None
    client = pkce_client(live_server, app, token_endpoint_auth_method="none")
    token = tokens_for(live_server, client, browser)
    rotated = client.refresh_token(f"{live_server.url}/token", refresh_token=token["refresh_token"])
    assert rotated["refresh_token"] != token["refresh_token"]
    # A public client cannot introspect (RFC 7662 2.1 needs authentication).
    response = httpx.post(
        f"{live_server.url}/introspect",
        data={"token": token["access_token"], "client_id": app.client_id},
    )
    assert response.json()["error"] == "invalid_client"
    # It can revoke its own refresh token with `none` (RFC 7009 2.1), never another's.
    other = register_client(live_server, client_id="native-2", public=True)
    foreign = httpx.post(
        f"{live_server.url}/revoke",
        data={"token": rotated["refresh_token"], "client_id": other.client_id},
    )
    assert foreign.status_code == 400
    revoked = httpx.post(
        f"{live_server.url}/revoke",
        data={"token": rotated["refresh_token"], "client_id": app.client_id},
    )
    assert revoked.status_code == 200
    again = httpx.post(
        f"{live_server.url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": rotated["refresh_token"],
            "client_id": app.client_id,
        },
    )
    assert again.json()["error"] == "invalid_grant"


def private_key_client(server: LiveServer) -> tuple[RegisteredClient, RSAKey]:
    key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, private=True)
    key.ensure_kid()
    app = register_client(
        server,
        client_id="pkjwt-app",
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    return app, key


def test_private_key_jwt(live_server, browser) -> None:
    app, key = private_key_client(live_server)
    token_url = f"{live_server.url}/token"
    client = OAuth2Client(
        client_id=app.client_id,
        client_secret=key.as_dict(private=True),
        token_endpoint_auth_method="private_key_jwt",
        redirect_uri=app.redirect_uri,
        scope="openid",
        code_challenge_method="S256",
    )
    client.register_client_auth_method(PrivateKeyJWT(token_url))
    token = tokens_for(live_server, client, browser)
    assert verify_id_token(live_server, token["id_token"], client_id=app.client_id)


def assertion(app: RegisteredClient, key: RSAKey, *, aud: str, jti: str, exp: int) -> str:
    claims = {"iss": app.client_id, "sub": app.client_id, "aud": aud, "jti": jti, "exp": exp}
    signed: str = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
    return signed


def test_private_key_jwt_refuses_replay_wrong_audience_and_wrong_key(live_server) -> None:
    app, key = private_key_client(live_server)
    token_url = f"{live_server.url}/token"

    def post(value: str) -> httpx.Response:
        return httpx.post(
            token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": "unknown",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": value,
            },
        )

    exp = int(time.time()) + 60
    once = assertion(app, key, aud=token_url, jti=str(uuid.uuid4()), exp=exp)
    # Authenticated: the refresh token is what fails.
    assert post(once).json()["error"] == "invalid_grant"
    assert post(once).json()["error"] == "invalid_client"  # replayed jti
    elsewhere = assertion(app, key, aud="https://other.example/token", jti="a1", exp=exp)
    assert post(elsewhere).json()["error"] == "invalid_client"
    stranger = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, private=True)
    stranger.ensure_kid()
    forged = assertion(app, stranger, aud=token_url, jti="a2", exp=exp)
    assert post(forged).json()["error"] == "invalid_client"
    long_lived = assertion(app, key, aud=token_url, jti="a3", exp=int(time.time()) + 86400)
    assert post(long_lived).json()["error"] == "invalid_client"


def test_introspection_of_client_credentials_and_refresh_permissions(live_server, app, browser):
    machine = register_client(
        live_server, client_id="api", grant_types=["client_credentials"], scope="reports:read"
    )
    cc = httpx.post(
        f"{live_server.url}/token",
        data={"grant_type": "client_credentials"},
        auth=(machine.client_id, machine.client_secret or ""),
    ).json()
    body = introspect(live_server, app, cc["access_token"])
    assert body["active"] is True
    assert body["client_id"] == "api"
    assert body["scope"] == "reports:read"
    user = tokens_for(live_server, pkce_client(live_server, app), browser)
    # Another client may read an access token (it is a JWT) but not a refresh token.
    assert introspect(live_server, machine, user["access_token"])["active"] is True
    assert introspect(live_server, machine, user["refresh_token"]) == {"active": False}
    assert introspect(live_server, app, user["refresh_token"])["active"] is True
    assert introspect(live_server, app, "nonsense") == {"active": False}
    unauthenticated = httpx.post(f"{live_server.url}/introspect", data={"token": "x"})
    assert unauthenticated.json()["error"] == "invalid_client"


def test_revocation(live_server, app, browser) -> None:
    client = pkce_client(live_server, app)
    token = tokens_for(live_server, client, browser)

    def revoke(value: str, as_: RegisteredClient = app, **extra: str) -> httpx.Response:
        return httpx.post(
            f"{live_server.url}/revoke",
            data={"token": value, **extra},
            auth=(as_.client_id, as_.client_secret or ""),
        )

    assert revoke(token["access_token"], token_type_hint="access_token").status_code == 200
    assert introspect(live_server, app, token["access_token"]) == {"active": False}
    assert introspect(live_server, app, token["refresh_token"])["active"] is True

    other = register_client(live_server, client_id="other-app")
    assert revoke(token["refresh_token"], other).status_code == 400
    assert introspect(live_server, app, token["refresh_token"])["active"] is True

    assert revoke(token["refresh_token"]).status_code == 200
    assert introspect(live_server, app, token["refresh_token"]) == {"active": False}
    assert refresh(live_server, app, token["refresh_token"]).json()["error"] == "invalid_grant"
    assert revoke("never-issued").status_code == 200  # RFC 7009 2.2


def test_token_responses_are_not_cached(live_server, app, browser) -> None:
    client = pkce_client(live_server, app)
    code = code_for(live_server, client, browser)
    response = redeem(live_server, app, code)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert json.loads(response.text)["expires_in"] == 600


def test_private_key_jwt_client_introspects(live_server) -> None:
    app, key = private_key_client(live_server)
    url = f"{live_server.url}/introspect"
    signed = assertion(app, key, aud=url, jti=str(uuid.uuid4()), exp=int(time.time()) + 60)
    response = httpx.post(
        url,
        data={
            "token": "unknown",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
    )
    assert response.status_code == 200
    assert response.json() == {"active": False}
