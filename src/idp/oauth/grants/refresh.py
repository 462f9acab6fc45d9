"""The refresh token grant (RFC 6749 6): rotation at every use, reuse revokes the grant."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError

from idp.oauth import store
from idp.oauth.context import claimed_on_loop, current_db
from idp.oauth.grants.base import TOKEN_AUTH_METHODS
from idp.oauth.models import Subject, TokenRecord


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """RFC 9700 4.14.2: every refresh returns a new refresh token and retires the old
    one; presenting a retired one again means it leaked, so the whole grant (its refresh
    and access tokens) is revoked. A refresh token is bound to its client (RFC 6749 6),
    expires when unused for `refresh_token_idle_seconds`, and never outlives its grant
    (`refresh_token_absolute_seconds` after sign-in)."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def _validate_request_token(self, client: Any) -> TokenRecord:
        value = self.request.form.get("refresh_token")
        if not value:
            raise InvalidRequestError("Missing 'refresh_token' in request.")
        now = self.server.now()
        on_loop = claimed_on_loop.get()
        if on_loop is not None and (on_loop.token, on_loop.client_id) == (
            value,
            client.get_client_id(),
        ):
            claimed: store.Claimed | None = on_loop.claimed  # claimed by the event loop
        else:
            claimed = store.claim_refresh_token(
                current_db(), token=value, client_id=client.get_client_id(), now=now
            )
        if claimed is not None:  # the usual case: one statement
            self._subject = claimed.subject
            return TokenRecord(
                kind="refresh_token",
                client_id=client.get_client_id(),
                scope=claimed.scope,
                expires_at=claimed.expires_at,
                issued_at=claimed.issued_at,
                revoked=False,
                now=now,
                grant_id=claimed.subject.grant_id,
            )
        # Not usable: read it to tell why (nothing was changed).
        db = current_db()
        found = store.find_refresh_token(db, token=value)
        if found is None or found.token.client_id != client.get_client_id():
            # Another client's token is not even looked at further: no rotation, no
            # revocation, so a confused client cannot disturb someone else's grant.
            raise InvalidGrantError("The refresh token is invalid.")
        row, grant = found.token, found.grant
        if row.rotated_at is not None and row.revoked_at is None:
            store.revoke_grant(db, grant_id=grant.id, now=now, reason="refresh_token_reused")
            raise InvalidGrantError("The refresh token has already been used.")
        if (
            row.revoked_at is not None
            or grant.revoked_at is not None
            or found.account_disabled
            or row.expires_at <= now
            or grant.expires_at <= now
        ):
            raise InvalidGrantError("The refresh token is invalid.")
        # Usable now, yet the claim failed: a concurrent use of the same token won the
        # compare-and-set between the two statements. Treat as reuse.
        store.revoke_grant(db, grant_id=grant.id, now=now, reason="refresh_token_reused")
        raise InvalidGrantError("The refresh token has already been used.")

    def authenticate_refresh_token(self, refresh_token: str) -> None:
        raise NotImplementedError("replaced by _validate_request_token")

    def authenticate_user(self, refresh_token: TokenRecord) -> Subject:
        return self._subject

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        """Nothing to do: `_validate_request_token` rotated it by compare-and-set."""
