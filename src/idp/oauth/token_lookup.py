"""Finding a presented token, whichever kind it is: our JWT access tokens (verified,
then checked against revoked `jti` and revoked grants) or opaque refresh tokens."""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from idp.oauth import store, tokens
from idp.oauth.context import current_db
from idp.oauth.models import TokenRecord

if TYPE_CHECKING:
    from idp.oauth.server import IdpAuthorizationServer

#: Refresh tokens are 43 URL-safe characters; JWTs have two dots.
_MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class CheckedAccessToken:
    """An access token verified, and its revocation read, moments ago by this request."""

    value: str
    claims: dict[str, Any]
    revoked: bool


#: Set by introspection on the event loop (`IdpAuthorizationServer.endpoint_response`)
#: around Authlib's endpoint, so `find_access_token` neither verifies it again nor reads.
checked_access_token: ContextVar[CheckedAccessToken | None] = ContextVar(
    "idp_checked_access_token", default=None
)


def access_token_ids(claims: dict[str, Any]) -> tuple[str, str | None]:
    """The `jti` and grant id (`gid`) of verified access token claims."""
    grant_id = claims.get(tokens.GRANT_CLAIM)
    return str(claims.get("jti", "")), grant_id if isinstance(grant_id, str) else None


def find_access_token(server: IdpAuthorizationServer, value: str) -> TokenRecord | None:
    """One of our access tokens, with its revocation state; None if not ours or expired."""
    now = server.now()
    checked = checked_access_token.get()
    if checked is not None and checked.value == value:
        claims, revoked = checked.claims, checked.revoked
        jti, grant_id = access_token_ids(claims)
    else:
        try:
            claims = tokens.verify_access_token(
                value, keys=server.keys, issuer=server.settings.issuer, now=now
            )
        except tokens.TokenInvalidError:
            return None
        jti, grant_id = access_token_ids(claims)
        revoked = store.access_token_revoked(current_db(), jti=jti, grant_id=grant_id)
    return TokenRecord(
        kind="access_token",
        client_id=str(claims.get("client_id", "")),
        scope=str(claims.get("scope", "")),
        expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
        issued_at=dt.datetime.fromtimestamp(int(claims.get("iat", 0)), dt.UTC),
        revoked=revoked,
        now=now,
        claims=claims,
        key=jti,
        grant_id=grant_id,
    )


def find_refresh_token(server: IdpAuthorizationServer, value: str) -> TokenRecord | None:
    """A refresh token by value; rotated, revoked or grant-revoked ones are `revoked`."""
    found = store.find_refresh_token(current_db(), token=value)
    if found is None:
        return None
    row, grant = found.token, found.grant
    return TokenRecord(
        kind="refresh_token",
        client_id=row.client_id,
        scope=row.scope,
        expires_at=min(row.expires_at, grant.expires_at),
        issued_at=row.issued_at,
        revoked=(
            row.rotated_at is not None
            or row.revoked_at is not None
            or grant.revoked_at is not None
            or found.account_disabled
        ),
        now=server.now(),
        claims={"sub": grant.account_id, "auth_time": int(grant.auth_time.timestamp())},
        key=row.token_hash,
        grant_id=grant.id,
    )


def find_token(server: IdpAuthorizationServer, value: str, hint: str | None) -> TokenRecord | None:
    """RFC 7009 2.1 / RFC 7662 2.1: the hint orders the search, it does not limit it."""
    if not value or len(value) > _MAX_TOKEN_LENGTH:
        return None
    looks_like_jwt = value.count(".") == 2
    order = [find_access_token, find_refresh_token]
    if hint == "refresh_token" or not looks_like_jwt:
        order.reverse()
    for finder in order:
        if finder is find_access_token and not looks_like_jwt:
            continue
        record = finder(server, value)
        if record is not None:
            return record
    return None
