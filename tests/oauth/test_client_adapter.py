"""The Authlib client adapter over our `Client` rows (RFC 9700 2.1, RFC 6749 2.3)."""

from __future__ import annotations

from idp.crypto import token_digest
from idp.models import Client
from idp.oauth.models import ClientProtocol, OAuthClient


def client(**kwargs: object) -> OAuthClient:
    values: dict[str, object] = {
        "client_id": "app",
        "name": "App",
        "redirect_uris": ["https://app.example/cb"],
        "post_logout_redirect_uris": ["https://app.example/bye"],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid email profile reports:read",
        "token_endpoint_auth_method": "client_secret_basic",
        "client_secret_hash": token_digest("s3cret"),
        "first_party": True,
    }
    values.update(kwargs)
    return OAuthClient(Client(**values))


def test_satisfies_the_protocol_authlib_calls() -> None:
    adapter: ClientProtocol = client()
    assert adapter.get_client_id() == "app"
    assert adapter.get_default_redirect_uri() is None  # redirect_uri always required


def test_redirect_uris_match_exactly() -> None:
    app = client()
    assert app.check_redirect_uri("https://app.example/cb")
    for near in (
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://APP.example/cb",
        "https://app.example/c",
        "http://app.example/cb",
    ):
        assert not app.check_redirect_uri(near), near
    assert app.check_post_logout_redirect_uri("https://app.example/bye")
    assert not app.check_post_logout_redirect_uri("https://app.example/cb")


def test_secret_check_is_by_digest() -> None:
    app = client()
    assert app.check_client_secret("s3cret")
    assert not app.check_client_secret("s3cret ")
    assert not app.check_client_secret("")
    assert not client(client_secret_hash=None).check_client_secret("s3cret")


def test_only_the_registered_auth_method() -> None:
    app = client()
    assert app.check_endpoint_auth_method("client_secret_basic", "token")
    assert not app.check_endpoint_auth_method("client_secret_post", "token")
    assert not app.check_endpoint_auth_method("none", "token")


def test_scopes_are_limited_to_the_clients() -> None:
    app = client()
    assert app.get_allowed_scope("openid email address phone") == "openid email"
    assert app.get_allowed_scope("address") is None
    assert app.get_allowed_scope(None) is None
    assert app.machine_scopes == ["reports:read"]


def test_grant_and_response_types() -> None:
    app = client()
    assert app.check_response_type("code")
    assert not app.check_response_type("token")
    assert not app.check_response_type("code id_token")
    assert not app.check_grant_type("client_credentials")
    machine = client(grant_types=["client_credentials"])
    assert machine.check_grant_type("client_credentials")
    assert not machine.check_response_type("code")
    public = client(token_endpoint_auth_method="none", grant_types=["client_credentials"])
    assert not public.check_grant_type("client_credentials")
