"""The client credentials grant (RFC 6749 4.4): confidential clients, their own scopes."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError

from idp.oauth.grants.base import CONFIDENTIAL_AUTH_METHODS
from idp.oauth.models import OAuthClient, split_scope


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """Only confidential clients (no `none` authentication, RFC 6749 4.4), and only
    scopes registered for the client that make sense without a person (no `openid`,
    `email`, `profile`): asking for more is `invalid_scope` (RFC 6749 5.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def validate_requested_scope(self) -> None:
        client: OAuthClient = self.request.client
        allowed = client.machine_scopes
        requested = split_scope(self.request.payload.scope)
        if not requested:
            self.request.scope = " ".join(allowed)
            return
        if not set(requested) <= set(allowed):
            raise InvalidScopeError("The client may not request this scope.")
        self.request.scope = " ".join(requested)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=self.request.scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
