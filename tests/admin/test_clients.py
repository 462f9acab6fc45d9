"""The client registry on real databases: registration rules, secrets, deletion."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OKPKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idp.admin import clients
from idp.admin.clients import (
    ClientIdTaken,
    ClientNotFound,
    InvalidClientMetadata,
    InvalidRedirectUri,
    client_secret_matches,
    create_client,
)
from idp.app import Services
from idp.crypto import token_digest
from idp.models import Account, AuditEvent, Client, Grant, RefreshToken, utcnow

WEB = ["https://app.example.org/callback"]


@pytest.fixture
def sessions(services: Services) -> sessionmaker[Session]:
    return services.sessions


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session, session.begin():
        yield session


def _public_jwk(kind: str = "EC", **extra: Any) -> dict[str, Any]:
    key = {"EC": lambda: ECKey.generate_key("P-256"), "OKP": lambda: OKPKey.generate_key("Ed25519")}
    jwk: dict[str, Any] = key[kind]().as_dict(private=False)
    jwk.update(extra)
    return jwk


def _rsa_1024() -> dict[str, Any]:
    """A weak public RSA JWK, built by hand (joserfc warns when asked to make one)."""
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    n, e = numbers.public_numbers().n, numbers.public_numbers().e

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    return {"kty": "RSA", "n": b64(n), "e": b64(e)}


# --- secrets -----------------------------------------------------------------------------


def test_confidential_client_gets_a_secret_once_stored_as_digest(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s, s.begin():
        client, secret = create_client(s, name=" Pharm Outcomes ", redirect_uris=WEB)
        client_id = client.client_id
    assert secret is not None
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    with sessions() as s:
        stored = clients.get_client(s, client_id=client_id)
        assert stored is not None
        assert stored.name == "Pharm Outcomes"
        assert stored.client_secret_hash == token_digest(secret)
        assert secret not in str(stored.__dict__)
        assert stored.token_endpoint_auth_method == "client_secret_basic"
        assert stored.grant_types == ["authorization_code", "refresh_token"]
        assert stored.scope == "openid email profile"
        assert stored.id_token_signed_response_alg == "RS256"
        assert stored.first_party is True
        assert client_secret_matches(stored, secret)
        assert not client_secret_matches(stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        assert not client_secret_matches(stored, "")
        assert not client_secret_matches(stored, "x" * 10_000)
        assert not client_secret_matches(stored, None)  # type: ignore[arg-type]
        events = s.scalars(select(AuditEvent).where(AuditEvent.event == "client.created")).all()
        assert [e.client_id for e in events] == [client_id]
        assert secret not in str(events[0].detail)


def test_two_clients_get_different_ids_and_secrets(db: Session) -> None:
    a, secret_a = create_client(db, name="A", redirect_uris=WEB)
    b, secret_b = create_client(db, name="B", redirect_uris=WEB)
    assert a.client_id != b.client_id
    assert secret_a != secret_b
    assert secret_b is not None
    assert not client_secret_matches(a, secret_b)


def test_public_client_has_no_secret(db: Session) -> None:
    client, secret = create_client(
        db, name="Mobile", redirect_uris=["com.example.app:/oauth2redirect"], public=True
    )
    assert secret is None
    assert client.client_secret_hash is None
    assert client.is_public
    assert client.token_endpoint_auth_method == "none"
    assert not client_secret_matches(client, "anything")


def test_auth_method_none_makes_a_public_client(db: Session) -> None:
    client, secret = create_client(
        db,
        name="SPA",
        redirect_uris=["http://localhost:5173/cb"],
        token_endpoint_auth_method="none",
    )
    assert (client.is_public, secret) == (True, None)


def test_client_secret_post_gets_a_secret(db: Session) -> None:
    client, secret = create_client(
        db, name="Post", redirect_uris=WEB, token_endpoint_auth_method="client_secret_post"
    )
    assert secret is not None
    assert client_secret_matches(client, secret)


def test_private_key_jwt_needs_public_keys_and_gets_no_secret(db: Session) -> None:
    with pytest.raises(InvalidClientMetadata, match="needs a JWK Set"):
        create_client(db, name="K", redirect_uris=WEB, token_endpoint_auth_method="private_key_jwt")
    keys = {"keys": [_public_jwk("EC", kid="one"), _public_jwk("OKP", kid="two")]}
    client, secret = create_client(
        db,
        name="K",
        redirect_uris=WEB,
        token_endpoint_auth_method="private_key_jwt",
        jwks=keys,
        id_token_signed_response_alg="ES256",
    )
    assert secret is None
    assert client.jwks == keys
    assert client.id_token_signed_response_alg == "ES256"


@pytest.mark.parametrize(
    ("jwks", "reason"),
    [
        ({}, "at least one key"),
        ({"keys": []}, "at least one key"),
        ({"keys": "nope"}, "at least one key"),
        ({"keys": ["nope"]}, "JSON object"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "public RSA, EC or OKP"),
        ({"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}, "private key material"),
        ({"keys": [_rsa_1024()]}, "at least 2048 bits"),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}, "could not be read"),
        ({"keys": [{"kty": "RSA", "n": "AQAB"}]}, "could not be read"),
        ({"keys": [_public_jwk(), _public_jwk()]}, "its own kid"),
        ({"keys": [_public_jwk(use="enc")]}, "signing key"),
    ],
)
@pytest.mark.filterwarnings("ignore:Key size should be:joserfc.errors.SecurityWarning")
def test_bad_jwks_are_refused(db: Session, jwks: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidClientMetadata, match=reason):
        create_client(
            db, name="K", redirect_uris=WEB, token_endpoint_auth_method="private_key_jwt", jwks=jwks
        )


# --- redirect URIs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.org/callback",
        "https://app.example.org:8443/cb?tenant=1",
        "http://localhost:8080/cb",
        "http://127.0.0.1:49152/cb",
        "http://[::1]:3000/cb",
        "com.example.app:/oauth2redirect",
    ],
)
def test_acceptable_redirect_uris(db: Session, uri: str) -> None:
    client, _ = create_client(db, name="ok", redirect_uris=[uri], public=True)
    assert client.redirect_uris == [uri]


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "is empty"),
        ("/callback", "must be absolute"),
        ("app.example.org/callback", "must be absolute"),
        ("https://app.example.org/cb#frag", "fragment"),
        ("https://app.example.org/cb#", "fragment"),
        ("http://app.example.org/cb", "must use https"),
        ("http://127.0.0.1.example.org/cb", "must use https"),
        ("https://*.example.org/cb", "wildcard"),
        ("https:///cb", "has no host"),
        ("https://user:pw@app.example.org/cb", "user name or password"),
        ("https://app.example.org/c b", "spaces or control"),
        ("https://app.example.org/cb\n", "spaces or control"),
        ("https://app.example.org:99999/cb", "not a valid URI"),
        ("javascript:alert(1)", "reverse domain form"),
        ("data:text/html,hi", "reverse domain form"),
        ("file:///etc/passwd", "reverse domain form"),
        ("myapp:/cb", "reverse domain form"),
        ("com.example.app://host/cb", "must look like"),
        ("https://app.example.org/" + "a" * 2000, "longer than"),
    ],
)
def test_unsafe_redirect_uris_are_refused(db: Session, uri: str, reason: str) -> None:
    with pytest.raises(InvalidRedirectUri, match=reason):
        create_client(db, name="bad", redirect_uris=[uri])


def test_post_logout_uris_follow_the_same_rules_and_duplicates_collapse(db: Session) -> None:
    with pytest.raises(InvalidRedirectUri, match="post-logout redirect URI"):
        create_client(
            db, name="x", redirect_uris=WEB, post_logout_redirect_uris=["http://evil.example/"]
        )
    client, _ = create_client(
        db,
        name="x",
        redirect_uris=[*WEB, *WEB],
        post_logout_redirect_uris=["https://app.example.org/bye"],
    )
    assert client.redirect_uris == WEB
    assert client.post_logout_redirect_uris == ["https://app.example.org/bye"]


# --- grant types, methods, algorithms, scope, ids ----------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"grant_types": ["implicit"]}, "Unsupported grant type 'implicit'"),
        ({"grant_types": ["password"]}, "Unsupported grant type 'password'"),
        ({"grant_types": []}, "at least one grant type"),
        ({"grant_types": ["refresh_token"]}, "needs authorization_code"),
        ({"public": True, "grant_types": ["client_credentials"]}, "public client cannot"),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, "Unsupported token endpoint"),
        ({"public": True, "token_endpoint_auth_method": "client_secret_basic"}, "auth method"),
        ({"id_token_signed_response_alg": "none"}, "Unsupported ID token algorithm"),
        ({"id_token_signed_response_alg": "HS256"}, "Unsupported ID token algorithm"),
        ({"scope": "  "}, "at least one scope"),
        ({"scope": 'openid "quoted"'}, "not allowed"),
        ({"name": "   "}, "name is empty"),
        ({"name": "n" * 201}, "too long"),
        ({"client_id": "has space"}, "1 to 64"),
        ({"client_id": "x" * 65}, "1 to 64"),
        ({"redirect_uris": []}, "needs a redirect URI"),
    ],
)
def test_bad_metadata_is_refused_with_a_reason(
    db: Session, kwargs: dict[str, Any], reason: str
) -> None:
    arguments: dict[str, Any] = {"name": "App", "redirect_uris": WEB, **kwargs}
    with pytest.raises(InvalidClientMetadata, match=reason):
        create_client(db, **arguments)
    assert db.scalars(select(Client)).all() == []


def test_client_credentials_only_needs_no_redirect_uri(db: Session) -> None:
    client, secret = create_client(
        db, name="Batch", redirect_uris=[], grant_types=["client_credentials"], scope="reports"
    )
    assert (client.grant_types, client.redirect_uris, client.scope) == (
        ["client_credentials"],
        [],
        "reports",
    )
    assert secret is not None


def test_explicit_client_id_is_unique(db: Session) -> None:
    client, _ = create_client(db, name="One", redirect_uris=WEB, client_id="pharm-outcomes")
    assert client.client_id == "pharm-outcomes"
    with pytest.raises(ClientIdTaken, match="already registered"):
        create_client(db, name="Two", redirect_uris=WEB, client_id="pharm-outcomes")


def test_third_party_and_service_name_are_kept(db: Session) -> None:
    client, _ = create_client(
        db,
        name="X",
        redirect_uris=WEB,
        first_party=False,
        service_name=" Ocular ",
        scope="openid openid email",
    )
    assert (client.first_party, client.service_name, client.scope) == (
        False,
        "Ocular",
        "openid email",
    )


# --- list, get, delete -------------------------------------------------------------------


def test_list_get_and_delete(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        keep, _ = create_client(s, name="Keep", redirect_uris=WEB)
        gone, _ = create_client(s, name="Gone", redirect_uris=WEB)
        account = Account(email="a@example.com", email_key="a@example.com")
        s.add(account)
        s.flush()
        now = utcnow()
        grant = Grant(
            client_id=gone.client_id,
            account_id=account.id,
            scope="openid",
            auth_time=now,
            acr="aal2",
            expires_at=now + dt.timedelta(hours=1),
        )
        s.add(grant)
        s.flush()
        s.add(
            RefreshToken(
                token_hash="rt",
                grant_id=grant.id,
                client_id=gone.client_id,
                scope="openid",
                expires_at=now + dt.timedelta(hours=1),
            )
        )
        keep_id, gone_id = keep.client_id, gone.client_id
    with sessions() as s:
        assert [c.client_id for c in clients.list_clients(s)] == [keep_id, gone_id]
        assert clients.get_client(s, client_id="no-such-client") is None
        assert clients.get_client(s, client_id="bad id with spaces") is None
    with sessions() as s, s.begin():
        clients.delete_client(s, client_id=gone_id, actor_id="admin-1")
        with pytest.raises(ClientNotFound, match="no-such-client"):
            clients.delete_client(s, client_id="no-such-client")
    with sessions() as s:
        assert [c.client_id for c in clients.list_clients(s)] == [keep_id]
        # Its grants and their refresh tokens went with it (ON DELETE CASCADE).
        assert s.scalars(select(Grant)).all() == []
        assert s.scalars(select(RefreshToken)).all() == []
        [event] = s.scalars(select(AuditEvent).where(AuditEvent.event == "client.deleted"))
        assert (event.client_id, event.actor_id) == (gone_id, "admin-1")
