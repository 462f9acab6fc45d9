"""client_credentials over real HTTP with Authlib's client (RFC 6749 4.4)."""

from __future__ import annotations

import base64

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import LiveServer, start_live_server
from tests.flows.oidc import discovery, introspect, oauth_client, register_client


@pytest.fixture
def machine(live_server: LiveServer):  # type: ignore[no-untyped-def]
    return register_client(
        live_server,
        grant_types=["client_credentials"],
        scope="openid reports:read reports:write",
    )


def test_client_credentials_issues_a_verifiable_rfc9068_token(live_server, machine) -> None:
    client = oauth_client(live_server, machine, scope="reports:read")
    token = client.fetch_token(f"{live_server.url}/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "reports:read"
    assert "refresh_token" not in token
    assert "id_token" not in token

    meta = discovery(live_server)
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    decoded = jwt.decode(token["access_token"], keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"  # ES256 unless IDP_ACCESS_TOKEN_ALG says RS256
    claims = decoded.claims
    assert claims["iss"] == meta["issuer"]
    assert claims["client_id"] == claims["sub"] == claims["aud"] == machine.client_id
    assert claims["scope"] == "reports:read"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"]


def test_client_credentials_defaults_to_the_clients_own_scopes(live_server, machine) -> None:
    client = oauth_client(live_server, machine, scope=None)
    token = client.fetch_token(f"{live_server.url}/token", grant_type="client_credentials")
    # `openid` needs a person; only the machine scopes are granted.
    assert token["scope"] == "reports:read reports:write"


@pytest.mark.parametrize("scope", ["reports:delete", "openid", "reports:read admin"])
def test_client_credentials_refuses_scopes_beyond_the_clients(live_server, machine, scope) -> None:
    response = httpx.post(
        f"{live_server.url}/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(machine.client_id, machine.client_secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_wrong_secret_with_basic_is_401_with_www_authenticate(live_server, machine) -> None:
    response = httpx.post(
        f"{live_server.url}/token",
        data={"grant_type": "client_credentials"},
        auth=(machine.client_id, "not-the-secret"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert response.headers["cache-control"] == "no-store"


def test_unknown_client_is_invalid_client(live_server) -> None:
    basic = base64.b64encode(b"nobody:secret").decode()
    response = httpx.post(
        f"{live_server.url}/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_client_not_registered_for_the_grant_is_refused(live_server) -> None:
    web = register_client(live_server)  # authorization_code + refresh_token only
    response = httpx.post(
        f"{live_server.url}/token",
        data={"grant_type": "client_credentials"},
        auth=(web.client_id, web.client_secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_public_client_cannot_use_client_credentials(live_server) -> None:
    app = register_client(live_server, public=True)
    response = httpx.post(
        f"{live_server.url}/token",
        data={"grant_type": "client_credentials", "client_id": app.client_id},
    )
    assert response.json()["error"] in {"invalid_client", "unauthorized_client"}
    assert response.status_code in {400, 401}


def test_unsupported_grant_types_are_refused(live_server, machine) -> None:
    for grant_type in ("password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"):
        response = httpx.post(
            f"{live_server.url}/token",
            data={"grant_type": grant_type, "username": "a", "password": "b"},
            auth=(machine.client_id, machine.client_secret or ""),
        )
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"


def test_repeated_parameters_are_refused(live_server, machine) -> None:
    response = httpx.post(
        f"{live_server.url}/token",
        content="grant_type=client_credentials&scope=reports:read&scope=reports:write",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(machine.client_id, machine.client_secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_access_tokens_are_rs256_when_configured(database_url: str) -> None:
    server = start_live_server(database_url, access_token_alg="RS256")
    try:
        machine = register_client(server, grant_types=["client_credentials"], scope="reports:read")
        token = oauth_client(server, machine, scope="reports:read").fetch_token(
            f"{server.url}/token", grant_type="client_credentials"
        )
        keys = KeySet.import_key_set(httpx.get(f"{server.url}/jwks.json").json())
        decoded = jwt.decode(token["access_token"], keys, algorithms=["RS256"])
        assert decoded.header["alg"] == "RS256"
        assert introspect(server, machine, token["access_token"])["active"] is True
    finally:
        server.stop()
        server.services.engine.dispose()
