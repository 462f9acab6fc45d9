"""Token formats and verification of our own JWTs (RFC 9068, OIDC Core 2, RFC 8725)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from idp.app import Services
from idp.oauth import tokens
from idp.oauth.keyring import get_keyring
from idp.oauth.models import Subject

ISSUER = "http://127.0.0.1:8000"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
SETTINGS = tokens.TokenSettings(issuer=ISSUER, access_token_seconds=600, id_token_seconds=300)
SUBJECT = Subject(
    account_id="acc-1",
    grant_id="grant-1",
    auth_time=NOW - dt.timedelta(minutes=5),
    acr="https://refeds.org/profile/mfa",
    amr=["pwd", "otp", "mfa"],
    sid="sid-1",
)


def header(token: str) -> dict[str, object]:
    raw = token.split(".")[0]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return decoded


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(head: dict[str, object], claims: dict[str, object], *, secret: bytes) -> str:
    """An HS256 JWS built by hand (joserfc itself refuses to key HMAC with a public key)."""
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_access_token_claims_for_a_person_and_for_a_client() -> None:
    person = tokens.access_token_claims(
        settings=SETTINGS, client_id="app", scope="openid email", subject=SUBJECT, now=NOW
    )
    assert person["sub"] == "acc-1"
    assert person["aud"] == person["client_id"] == "app"
    assert person["exp"] - person["iat"] == 600
    assert person["auth_time"] == int(SUBJECT.auth_time.timestamp())
    assert person["acr"] == SUBJECT.acr
    assert person[tokens.GRANT_CLAIM] == "grant-1"
    machine = tokens.access_token_claims(
        settings=SETTINGS, client_id="api", scope="x", subject=None, now=NOW
    )
    assert machine["sub"] == "api"
    assert "auth_time" not in machine
    assert tokens.GRANT_CLAIM not in machine
    assert machine["jti"] != person["jti"]


def test_id_token_claims() -> None:
    claims = tokens.id_token_claims(
        settings=SETTINGS,
        client_id="app",
        subject=SUBJECT,
        nonce="n1",
        access_token="at-value",
        alg="RS256",
        now=NOW,
    )
    assert claims["sub"] == "acc-1"
    assert claims["aud"] == "app"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nonce"] == "n1"
    assert claims["sid"] == "sid-1"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["at_hash"]
    without = tokens.id_token_claims(
        settings=SETTINGS,
        client_id="app",
        subject=SUBJECT,
        nonce=None,
        access_token=None,
        alg="ES256",
        now=NOW,
    )
    assert "nonce" not in without
    assert "at_hash" not in without


def test_access_tokens_verify_and_other_jwts_do_not(services: Services) -> None:
    keys = get_keyring(services)
    now = dt.datetime.now(dt.UTC)
    claims = tokens.access_token_claims(
        settings=SETTINGS, client_id="app", scope="openid", subject=SUBJECT, now=now
    )
    access = tokens.sign_access_token(claims, keys)
    assert header(access)["typ"] == "at+jwt"
    assert tokens.verify_access_token(access, keys=keys, issuer=ISSUER, now=now)["jti"]

    id_claims = tokens.id_token_claims(
        settings=SETTINGS,
        client_id="app",
        subject=SUBJECT,
        nonce=None,
        access_token=None,
        alg="ES256",
        now=now,
    )
    id_token = tokens.sign_id_token(id_claims, keys, alg="ES256")
    assert header(id_token)["alg"] == "ES256"
    with pytest.raises(tokens.TokenInvalidError):  # RFC 8725 3.11: typ keeps kinds apart
        tokens.verify_access_token(id_token, keys=keys, issuer=ISSUER, now=now)
    assert tokens.verify_id_token_hint(id_token, keys=keys, issuer=ISSUER, now=now)["sub"]
    with pytest.raises(tokens.TokenInvalidError):
        tokens.verify_id_token_hint(access, keys=keys, issuer=ISSUER, now=now)

    later = now + dt.timedelta(seconds=601)
    with pytest.raises(tokens.TokenInvalidError):
        tokens.verify_access_token(access, keys=keys, issuer=ISSUER, now=later)
    # An expired ID token is still a valid hint (OIDC Core 3.1.2.1).
    assert tokens.verify_id_token_hint(id_token, keys=keys, issuer=ISSUER, now=later)
    with pytest.raises(tokens.TokenInvalidError):
        tokens.verify_access_token(access, keys=keys, issuer="https://other.example", now=now)


def test_forged_tokens_are_refused(services: Services) -> None:
    keys = get_keyring(services)
    now = dt.datetime.now(dt.UTC)
    claims = tokens.access_token_claims(
        settings=SETTINGS, client_id="app", scope="openid", subject=SUBJECT, now=now
    )
    kid = keys.signing_key("RS256").kid
    stranger = RSAKey.generate_key(2048, private=True)
    forged = jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, stranger)
    # HS256 keyed with the public key (algorithm confusion, RFC 8725 2.1).
    public_pem = keys.signing_key("RS256").as_pem(private=False)
    confused = hs256({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, claims, secret=public_pem)
    unsigned = (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        + "."
    )
    for token in (forged, confused, unsigned, "not-a-jwt", "a.b.c"):
        with pytest.raises(tokens.TokenInvalidError):
            tokens.verify_access_token(token, keys=keys, issuer=ISSUER, now=now)


def test_refresh_tokens_have_256_bits() -> None:
    values = {tokens.new_refresh_token() for _ in range(100)}
    assert len(values) == 100
    assert all(len(v) == 43 for v in values)
