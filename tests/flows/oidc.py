"""Helpers for the protocol flow tests: register clients and people on a live server,
and talk to it with Authlib's *client* (a real OAuth client library, not our code)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import LiveServer

REDIRECT_URI = "https://app.example/callback"
LOGOUT_URI = "https://app.example/signed-out"


@dataclass
class RegisteredClient:
    """A client as its developer knows it."""

    client_id: str
    client_secret: str | None
    redirect_uri: str = REDIRECT_URI


def register_client(server: LiveServer, **kwargs: Any) -> RegisteredClient:
    """Register a client through the admin service (as `idp clients create` does)."""
    from idp.admin.clients import create_client

    kwargs.setdefault("name", "Test app")
    kwargs.setdefault("redirect_uris", [REDIRECT_URI])
    kwargs.setdefault("post_logout_redirect_uris", [LOGOUT_URI])
    with server.services.sessions() as db, db.begin():
        client, secret = create_client(db, **kwargs)
        return RegisteredClient(client.client_id, secret, kwargs["redirect_uris"][0])


@dataclass
class Person:
    """An account with a confirmed authenticator."""

    account_id: str
    email: str
    password: str
    totp_secret: str


def register_person(server: LiveServer, *, email: str = "pat@example.org") -> Person:
    """Create an account with password and TOTP set up."""
    from tests.flows.signin import enrolled_account

    password = "correct horse battery staple 42"
    with server.services.sessions() as db, db.begin():
        account, secret = enrolled_account(db, server.services, email=email, password=password)
        account.email_verified = True
        return Person(account.id, email, password, secret)


def oauth_client(server: LiveServer, client: RegisteredClient, **kwargs: Any) -> OAuth2Client:
    """Authlib's httpx OAuth2Client for `client`, against the live server."""
    kwargs.setdefault("redirect_uri", client.redirect_uri)
    kwargs.setdefault("scope", "openid email profile")
    return OAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret,
        follow_redirects=False,
        **kwargs,
    )


def introspect(server: LiveServer, app: RegisteredClient, token: str) -> dict[str, Any]:
    """Introspect `token` as the confidential client `app` (RFC 7662)."""
    response = httpx.post(
        f"{server.url}/introspect",
        data={"token": token},
        auth=(app.client_id, app.client_secret or ""),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def discovery(server: LiveServer) -> dict[str, Any]:
    """The provider's discovery document."""
    response = httpx.get(f"{server.url}/.well-known/openid-configuration")
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


def verify_id_token(server: LiveServer, id_token: str, *, client_id: str) -> dict[str, Any]:
    """Validate an ID token against the published JWKS, as a relying party does."""
    meta = discovery(server)
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256"])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    )
    registry.validate(token.claims)
    return dict(token.claims)


def pkce_pair() -> tuple[str, str]:
    """A code_verifier and its S256 code_challenge (RFC 7636 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def utc(seconds: float) -> dt.datetime:
    """A UTC datetime from Unix seconds."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def signed_in_browser(
    server: LiveServer,
    person: Person,
    *,
    auth_time: dt.datetime | None = None,
    amr: tuple[str, ...] = ("pwd", "otp", "mfa"),
) -> httpx.Client:
    """A browser that already holds a session for `person` (started by the identity
    domain's own `start_session`, as the sign-in pages do), for single sign-on tests."""
    from idp.accounts.sessions import session_cookie_name, start_session
    from idp.models import utcnow
    from idp.oauth.acr import acr_for

    now = utcnow()
    with server.services.sessions() as db, db.begin():
        _, cookie = start_session(
            db,
            account_id=person.account_id,
            auth_time=auth_time or now,
            amr=list(amr),
            acr=acr_for(amr),
            settings=server.services.settings,
            now=now,
        )
    browser = httpx.Client(follow_redirects=False)
    browser.cookies.set(session_cookie_name(server.services.settings), cookie, domain="127.0.0.1")
    return browser


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The query parameters of a redirect to the client."""
    from urllib.parse import parse_qsl, urlsplit

    assert response.status_code in (302, 303), (response.status_code, response.text[:300])
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))
