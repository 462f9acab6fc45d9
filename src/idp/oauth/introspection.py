"""Token introspection (RFC 7662) for authenticated confidential clients."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from idp.oauth.grants.base import CONFIDENTIAL_AUTH_METHODS
from idp.oauth.models import TokenRecord
from idp.oauth.token_lookup import find_token


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 2.1: the caller authenticates (confidential clients only). Access tokens
    are JWTs any resource server may read, so any authenticated client may introspect
    one; a refresh token only by the client it was issued to (RFC 7662 4)."""

    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def check_params(self, request: Any, client: Any) -> None:
        """`token` is required; a `token_type_hint` we do not know is ignored (RFC 7009
        2.1: it "does not influence the revocation response"; RFC 7662 2.1: the hint
        only orders the search), where Authlib would refuse it."""
        if "token" not in request.form:
            raise InvalidRequestError("Missing 'token' in request.")

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        return find_token(self.server, token_string, token_type_hint)

    def check_permission(self, token: TokenRecord, client: Any, request: Any) -> bool:
        if token.kind == "access_token":
            return True
        return token.check_client(client)

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "active": True,
            "client_id": token.client_id,
            "scope": token.scope,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "exp": int(token.expires_at.timestamp()),
            "iat": int(token.issued_at.timestamp()),
            "iss": self.server.settings.issuer,
        }
        for claim in ("sub", "aud", "jti", "auth_time", "acr"):
            if claim in token.claims:
                payload[claim] = token.claims[claim]
        return payload
