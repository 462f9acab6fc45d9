"""The Starlette adapter: what Authlib sees of a request."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from idp.app import build_services
from idp.oauth.server import IdpAuthorizationServer, RequestData
from tests.conftest import make_settings


@pytest.fixture
def server(database_url: str):  # type: ignore[no-untyped-def]
    services = build_services(make_settings(database_url, issuer="https://idp.example"))
    yield IdpAuthorizationServer(services)
    services.engine.dispose()


def test_public_url_behind_a_tls_proxy(server: IdpAuthorizationServer) -> None:
    data = RequestData(
        method="POST",
        url="http://10.0.0.5:8000/token?x=1",  # what the app sees behind the proxy
        headers=Headers({"Authorization": "Basic abc"}),
        query=[("x", "1")],
        form=[("grant_type", "client_credentials"), ("scope", "a")],
    )
    request = server.create_oauth2_request(data)
    assert request.uri == "https://idp.example/token?x=1"
    # Header names are case-insensitive, as Authlib's client authentication expects.
    assert request.headers.get("Authorization") == "Basic abc"
    assert request.headers.get("authorization") == "Basic abc"
    assert request.form == {"grant_type": "client_credentials", "scope": "a"}
    assert request.args == {"x": "1"}
    assert request.payload.grant_type == "client_credentials"


def test_query_wins_and_duplicates_are_kept_for_checks(server: IdpAuthorizationServer) -> None:
    data = RequestData(
        method="POST",
        url="https://idp.example/authorize?state=q",
        headers=Headers(),
        query=[("state", "q"), ("scope", "openid")],
        form=[("state", "f")],
    )
    request = server.create_oauth2_request(data)
    assert request.payload.state == "q"
    assert request.payload.datalist["state"] == ["q", "f"]


def test_the_request_sets_what_authlibs_request_sets(server: IdpAuthorizationServer) -> None:
    """`StarletteOAuth2Request` sets Authlib's fields itself (skipping a per-request
    environment read): it must not miss one that a newer Authlib adds."""
    from authlib.oauth2 import OAuth2Request

    plain = OAuth2Request("POST", "https://idp.example/token", headers={})
    ours = server.create_oauth2_request(
        RequestData(method="POST", url="https://idp.example/token", headers=Headers(), query=[])
    )
    assert set(vars(plain)) <= set(vars(ours))
    assert ours.method == "POST"
    assert ours.uri == "https://idp.example/token"


def test_an_insecure_issuer_still_fails_authlibs_transport_check(database_url: str) -> None:
    from authlib.oauth2.rfc6749.errors import InsecureTransportError

    services = build_services(make_settings(database_url, issuer="http://idp.example"))
    try:
        server = IdpAuthorizationServer(services)
        assert server.secure_transport is False
        data = RequestData(method="GET", url="http://idp.example/x", headers=Headers(), query=[])
        with pytest.raises(InsecureTransportError):
            server.create_oauth2_request(data)
    finally:
        services.engine.dispose()
