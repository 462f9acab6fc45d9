"""The authorization code grant (RFC 6749 4.1) with our storage and single-use rules."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidGrantError

from idp.oauth import store
from idp.oauth.context import current_db, pending_issued_codes, redeemed_on_loop
from idp.oauth.grants.base import TOKEN_AUTH_METHODS
from idp.oauth.models import Authentication, OAuthCode, Subject


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """Codes live at most `authorization_code_seconds` (<= 60 s) and work once: a second
    redemption fails with `invalid_grant` and revokes every token the first one issued
    (RFC 6749 4.1.2, RFC 9700 4.2.4)."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def create_authorization_response(
        self, redirect_uri: str, grant_user: Authentication | None
    ) -> tuple[str, list[tuple[str, str]]]:
        """Issue a code for the signed-in person; returns where to send it and the
        parameters (the response mode and `iss` are added by `idp.oauth.authorize`)."""
        if grant_user is None:
            raise AccessDeniedError(redirect_uri=redirect_uri)
        self.request.user = grant_user
        code: str = self.generate_authorization_code()
        self.save_authorization_code(code, self.request)
        params = [("code", code)]
        if self.request.payload.state:
            params.append(("state", self.request.payload.state))
        return redirect_uri, params

    def save_authorization_code(self, code: str, request: Any) -> None:
        server = self.server
        now = server.now()
        grant = store.grant_row(
            client_id=request.client.get_client_id(),
            authentication=request.user,
            scope=request.scope,
            now=now,
            absolute_seconds=server.settings.refresh_token_absolute_seconds,
        )
        data = request.payload.data
        row = store.code_row(
            code=code,
            grant=grant,
            redirect_uri=request.payload.redirect_uri,
            nonce=data.get("nonce") or None,
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            now=now,
            lifetime_seconds=server.settings.authorization_code_seconds,
        )
        pending = pending_issued_codes.get()
        if pending is not None:  # written by `resume_on_loop`, in its transaction
            pending.append((grant, row))
        else:
            store.insert_issued_code(current_db(), grant, row)

    def query_authorization_code(self, code: str, client: Any) -> OAuthCode | None:
        on_loop = redeemed_on_loop.get()
        if on_loop is not None and (on_loop.code, on_loop.client_id) == (
            code,
            client.get_client_id(),
        ):
            row = on_loop.redeemed  # redeemed by the event loop, the same statement
        else:
            try:
                row = store.redeem_code(
                    current_db(), code=code, client_id=client.get_client_id(), now=self.server.now()
                )
            except store.CodeReusedError:
                raise InvalidGrantError("The authorization code has already been used.") from None
        if row is None:
            return None
        self._subject = row.subject
        return OAuthCode(row)

    def delete_authorization_code(self, authorization_code: OAuthCode) -> None:
        """Nothing to do: `redeem_code` marked it used by compare-and-set."""

    def authenticate_user(self, authorization_code: OAuthCode) -> Subject | None:
        """Read with the code (`redeem_code`); None if the grant was revoked or the
        account disabled since the code was issued."""
        return self._subject
