"""Discovery, RFC 8414 metadata and the JWKS over real HTTP, checked with Authlib's
metadata validators and joserfc (not our own code)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc import discovery, rpinitiated
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet, RSAKey

from idp.oauth.acr import ACR_MFA, ACR_SFA
from idp.oauth.keyring import KeyRing
from idp.oauth.keys import rotate_keys
from tests.clock import Clock
from tests.conftest import LiveServer

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}

EXPECTED: dict[str, Any] = {
    "scopes_supported": ["openid", "email", "profile", "offline_access"],
    "response_types_supported": ["code"],
    "response_modes_supported": ["query", "form_post"],
    "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
    "subject_types_supported": ["public"],
    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    "token_endpoint_auth_methods_supported": [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ],
    "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
    "introspection_endpoint_auth_methods_supported": [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ],
    "revocation_endpoint_auth_methods_supported": [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ],
    "claims_supported": [
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "acr",
        "amr",
        "sid",
        "at_hash",
        "email",
        "email_verified",
        "name",
        "updated_at",
    ],
    "code_challenge_methods_supported": ["S256"],
    "acr_values_supported": [ACR_SFA, ACR_MFA],
    "prompt_values_supported": ["none", "login", "consent"],
    "claims_parameter_supported": False,
    "request_parameter_supported": False,
    "request_uri_parameter_supported": False,
    "require_request_uri_registration": False,
    "authorization_response_iss_parameter_supported": True,
    "frontchannel_logout_supported": False,
    "backchannel_logout_supported": False,
}

ENDPOINTS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "userinfo_endpoint": "/userinfo",
    "jwks_uri": "/jwks.json",
    "introspection_endpoint": "/introspect",
    "revocation_endpoint": "/revoke",
    "end_session_endpoint": "/logout",
}


def fetch(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response


def test_openid_configuration_is_complete_and_valid(live_server: LiveServer) -> None:
    response = fetch(f"{live_server.url}/.well-known/openid-configuration")
    assert response.headers["cache-control"] == "public, max-age=3600"
    document = response.json()
    # OIDC Discovery 4.3: the issuer equals the configured issuer, exactly.
    assert document["issuer"] == live_server.services.settings.issuer == live_server.url
    for name, path in ENDPOINTS.items():
        assert document[name] == live_server.url + path
    for name, value in EXPECTED.items():
        assert document[name] == value, name
    assert document["code_challenge_methods_supported"] == ["S256"]
    metadata = discovery.OpenIDProviderMetadata(document)
    metadata.validate(metadata_classes=[rpinitiated.OpenIDProviderMetadata])


def test_rfc8414_metadata_is_the_same_document_and_valid(live_server: LiveServer) -> None:
    oidc = fetch(f"{live_server.url}/.well-known/openid-configuration").json()
    response = fetch(f"{live_server.url}/.well-known/oauth-authorization-server")
    assert response.headers["cache-control"] == "public, max-age=3600"
    document = response.json()
    assert document == oidc
    AuthorizationServerMetadata(document).validate()


def test_validators_would_catch_a_broken_document(live_server: LiveServer) -> None:
    """The validation above can fail: an http issuer off loopback is refused."""
    document = fetch(f"{live_server.url}/.well-known/openid-configuration").json()
    with pytest.raises(ValueError, match="https"):
        AuthorizationServerMetadata({**document, "issuer": "http://idp.example"}).validate()


def test_jwks_at_the_advertised_uri_has_public_keys_only(live_server: LiveServer) -> None:
    document = fetch(f"{live_server.url}/.well-known/openid-configuration").json()
    response = fetch(document["jwks_uri"])
    # Shorter than IDP_KEY_ACTIVATION_DELAY_SECONDS (900 s by default).
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert sorted(key["alg"] for key in keys) == ["ES256", "RS256"]
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["use"] == "sig"
        assert key["kid"]
    by_alg = {key["alg"]: key for key in keys}
    assert set(by_alg["RS256"]) == {"kty", "kid", "use", "alg", "n", "e"}
    assert set(by_alg["ES256"]) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
    assert by_alg["ES256"]["crv"] == "P-256"


def test_tokens_signed_by_the_provider_verify_against_the_published_jwks(
    live_server: LiveServer,
) -> None:
    published = KeySet.import_key_set(fetch(f"{live_server.url}/jwks.json").json())
    ring = live_server.services.extras["keyring"]
    assert isinstance(ring, KeyRing)
    for alg in ("RS256", "ES256"):
        key = ring.signing_key(alg)
        token = jwt.encode({"alg": alg, "kid": key.kid}, {"iss": live_server.url}, key)
        assert jwt.decode(token, published, algorithms=[alg]).claims["iss"] == live_server.url
    stranger = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, private=True)
    forged = jwt.encode({"alg": "RS256", "kid": ring.signing_key().kid}, {}, stranger)
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, published, algorithms=["RS256"])


def test_a_rotation_reaches_the_served_jwks_without_restart(live_server: LiveServer) -> None:
    services = live_server.services
    clock = Clock()
    ring = KeyRing(services.sessions, services.encryptor, now=clock)
    ring.ensure_keys()
    services.extras["keyring"] = ring
    before = {key["kid"] for key in fetch(f"{live_server.url}/jwks.json").json()["keys"]}
    assert len(before) == 2
    with services.sessions() as db, db.begin():
        created = rotate_keys(
            db,
            encryptor=services.encryptor,
            now=clock.now,
            activation_delay=dt.timedelta(minutes=15),
            retire_after=dt.timedelta(minutes=11),
        )
    clock.now += dt.timedelta(seconds=6)
    after = {key["kid"] for key in fetch(f"{live_server.url}/jwks.json").json()["keys"]}
    assert after == before | {row.kid for row in created}
    clock.now += dt.timedelta(minutes=15 + 11)
    retired = json.loads(fetch(f"{live_server.url}/jwks.json").content)
    assert {key["kid"] for key in retired["keys"]} == {row.kid for row in created}
