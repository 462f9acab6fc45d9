"""Token formats: RFC 9068 JWT access tokens, OIDC ID tokens, opaque refresh tokens.

Format only: what goes into a token and how ours are verified. Storage lives in the
grants (refresh-token digests) and in revocation (revoked `jti`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from authlib.oidc.core.util import create_half_hash
from joserfc.jwk import Key

from idp.crypto import new_token
from idp.oauth import jws
from idp.oauth.models import Subject

#: RFC 9068 2.1: the media type of a JWT access token.
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type)
#: Algorithms our own tokens may carry; anything else (e.g. "none", HS256) is refused.
OUR_ALGS = list(jws.ALGS)
#: Private claim naming the grant (token family) an access token belongs to, so revoking
#: the grant revokes its access tokens too (RFC 6749 4.1.2, RFC 9700 4.14).
GRANT_CLAIM = "gid"


class SigningKeys(Protocol):
    """What token issuing needs from the keyring."""

    def signing_key(self, alg: str = ...) -> Any: ...
    def verification_key_map(self, kid: str | None = ...) -> Mapping[str, Key]: ...


class TokenInvalidError(Exception):
    """One of our tokens failed verification; the message is internal detail only."""


@dataclass(frozen=True)
class TokenSettings:
    """The settings token issuing reads."""

    issuer: str
    access_token_seconds: int
    id_token_seconds: int
    access_token_alg: str = "ES256"  # noqa: S105 (an algorithm name)


def _ts(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def new_refresh_token() -> str:
    """An opaque refresh token with 256 bits of entropy; only its digest is stored."""
    return new_token(32)


def access_token_claims(
    *,
    settings: TokenSettings,
    client_id: str,
    scope: str,
    subject: Subject | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """RFC 9068 2.2 claims. For client_credentials (no person) `sub` is the client id."""
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject.account_id if subject else client_id,
        "aud": client_id,
        "client_id": client_id,
        "scope": scope,
        "jti": secrets.token_urlsafe(16),
        "iat": _ts(now),
        "exp": _ts(now) + settings.access_token_seconds,
    }
    if subject is not None:
        # RFC 9068 2.2.1 / RFC 9470 4: how and when the person authenticated.
        claims["auth_time"] = _ts(subject.auth_time)
        claims["acr"] = subject.acr
        claims[GRANT_CLAIM] = subject.grant_id
    return claims


def sign_access_token(claims: Mapping[str, Any], keys: SigningKeys, *, alg: str = "ES256") -> str:
    """Sign with the current key for `alg`, `typ: at+jwt` (RFC 9068 2.1)."""
    return jws.sign(dict(claims), keys.signing_key(alg), alg=alg, typ=ACCESS_TOKEN_TYP)


def id_token_claims(
    *,
    settings: TokenSettings,
    client_id: str,
    subject: Subject,
    nonce: str | None,
    access_token: str | None,
    alg: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """OIDC Core 2 and 3.1.3.6: iss, sub (the opaque account id, never the email), aud,
    exp, iat, auth_time, nonce (when sent), acr, amr (RFC 8176), sid, at_hash."""
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject.account_id,
        "aud": client_id,
        "iat": _ts(now),
        "exp": _ts(now) + settings.id_token_seconds,
        "auth_time": _ts(subject.auth_time),
        "acr": subject.acr,
        "amr": list(subject.amr),
    }
    if nonce:
        claims["nonce"] = nonce
    if subject.sid:
        claims["sid"] = subject.sid
    if access_token:
        at_hash = create_half_hash(access_token, alg)
        if at_hash is not None:
            claims["at_hash"] = at_hash.decode("ascii")
    return claims


def sign_id_token(claims: Mapping[str, Any], keys: SigningKeys, *, alg: str) -> str:
    """Sign an ID token with the client's registered algorithm (RS256 by default)."""
    return jws.sign(dict(claims), keys.signing_key(alg), alg=alg, typ="JWT")


def verify_our_jwt(
    token: str,
    *,
    keys: SigningKeys,
    issuer: str,
    now: dt.datetime,
    typ: str,
    check_exp: bool = True,
    reread_unknown_kid: bool = True,
) -> dict[str, Any]:
    """Verify a JWT we issued: our keys only, RS256/ES256 only, our issuer, the expected
    `typ` (RFC 8725 3.11: an ID token is never accepted as an access token), not expired.
    A `kid` the loaded keys lack makes the keyring re-read the database once (a rotation
    by another process), unless `reread_unknown_kid` is False (on the event loop)."""
    try:
        try:
            header, claims = jws.verify(token, keys.verification_key_map())
        except jws.UnknownKeyError as unknown:
            if not reread_unknown_kid:
                raise
            header, claims = jws.verify(token, keys.verification_key_map(unknown.kid))
    except jws.JWSError as exc:
        raise TokenInvalidError(f"signature: {exc}") from None
    if str(header.get("typ", "")).lower() != typ:
        raise TokenInvalidError("wrong typ")
    if claims.get("iss") != issuer:
        raise TokenInvalidError("wrong issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise TokenInvalidError("no exp")
    if check_exp and exp <= _ts(now):
        raise TokenInvalidError("expired")
    return claims


def verify_access_token(
    token: str,
    *,
    keys: SigningKeys,
    issuer: str,
    now: dt.datetime,
    reread_unknown_kid: bool = True,
) -> dict[str, Any]:
    """Verify one of our RFC 9068 access tokens (signature, typ, iss, exp)."""
    return verify_our_jwt(
        token,
        keys=keys,
        issuer=issuer,
        now=now,
        typ=ACCESS_TOKEN_TYP,
        reread_unknown_kid=reread_unknown_kid,
    )


def verify_id_token_hint(
    token: str, *, keys: SigningKeys, issuer: str, now: dt.datetime
) -> dict[str, Any]:
    """Verify an `id_token_hint`: our signature and issuer; an expired one is still a
    valid hint (OIDC Core 3.1.2.1, RP-Initiated Logout 2)."""
    return verify_our_jwt(token, keys=keys, issuer=issuer, now=now, typ="jwt", check_exp=False)


Clock = Callable[[], dt.datetime]
