"""The UserInfo endpoint (OIDC Core 5.3): claims about the person, by scope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idp.models import Account
from idp.oauth.context import current_db
from idp.oauth.errors import (
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    MissingTokenError,
)
from idp.oauth.token_lookup import find_access_token

if TYPE_CHECKING:
    from idp.oauth.server import IdpAuthorizationServer, RequestData


def bearer_token(data: RequestData) -> str:
    """The access token from the Authorization header (RFC 6750 2.1) or the form body
    (RFC 6750 2.2); never from the query string, and never from both."""
    header = data.headers.get("authorization", "")
    in_form = [v for k, v in data.form if k == "access_token"]
    scheme, _, value = header.partition(" ")
    if header and scheme.lower() == "bearer" and value.strip():
        if in_form:
            raise InvalidRequestError("Send the access token once.")
        return value.strip()
    if len(in_form) == 1:
        return in_form[0]
    raise MissingTokenError("An access token is required.")


def claims_for(account: Account, scopes: set[str]) -> dict[str, Any]:
    """OIDC Core 5.4: `openid` -> sub; `email` -> email, email_verified; `profile` ->
    name, updated_at."""
    claims: dict[str, Any] = {"sub": account.id}
    if "email" in scopes and account.email:
        claims["email"] = account.email
        claims["email_verified"] = bool(account.email_verified)
    if "profile" in scopes:
        if account.name:
            claims["name"] = account.name
        claims["updated_at"] = int(account.updated_at.timestamp())
    return claims


def userinfo(server: IdpAuthorizationServer, data: RequestData) -> dict[str, Any]:
    """The claims for the bearer token's person; raises an OAuth error otherwise."""
    token = find_access_token(server, bearer_token(data))
    if token is None or token.is_revoked() or token.is_expired():
        raise InvalidTokenError("The access token is invalid, expired or revoked.")
    scopes = set(token.scope.split())
    if "openid" not in scopes or token.grant_id is None:
        # A client_credentials token has no person behind it.
        raise InsufficientScopeError("The access token lacks the openid scope.")
    account = current_db().get(Account, token.claims.get("sub"))
    if account is None or account.disabled:
        raise InvalidTokenError("The access token is invalid, expired or revoked.")
    return claims_for(account, scopes)
