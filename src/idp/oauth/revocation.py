"""Token revocation (RFC 7009)."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint

from idp.oauth import store
from idp.oauth.context import current_db
from idp.oauth.grants.base import TOKEN_AUTH_METHODS
from idp.oauth.models import TokenRecord
from idp.oauth.token_lookup import find_token


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 2.1: a client revokes its own tokens (public clients with `none`).
    Revoking a refresh token ends its whole grant, access tokens included (RFC 7009 2.1
    "SHOULD also invalidate all access tokens based on the same authorization grant");
    revoking an access token records its `jti`. Unknown tokens get 200 (RFC 7009 2.2)."""

    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def check_params(self, request: Any, client: Any) -> None:
        """`token` is required; a `token_type_hint` we do not know is ignored (RFC 7009
        2.1: it "does not influence the revocation response"; RFC 7662 2.1: the hint
        only orders the search), where Authlib would refuse it."""
        if "token" not in request.form:
            raise InvalidRequestError("Missing 'token' in request.")

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return find_token(self.server, token_string, token_type_hint)

    def revoke_token(self, token: TokenRecord, request: Any) -> None:
        db, now = current_db(), self.server.now()
        if token.kind == "refresh_token" and token.grant_id:
            store.revoke_grant(db, grant_id=token.grant_id, now=now, reason="revoked_by_client")
        elif token.kind == "access_token" and token.key:
            store.revoke_access_token(db, jti=token.key, expires_at=token.expires_at)
