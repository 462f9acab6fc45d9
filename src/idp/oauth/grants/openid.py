"""OpenID Connect ID tokens on the code and refresh grants (OIDC Core 3.1.3.3, 12.2)."""

from __future__ import annotations

from typing import Any

from authlib.oidc.core import OpenIDCode, OpenIDToken

from idp.oauth import tokens
from idp.oauth.models import OAuthClient, OAuthCode, Subject


class _IdTokenEncoder:
    """Builds the ID token with our claims and keys instead of Authlib's defaults."""

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        server = request.server
        client: OAuthClient = request.client
        subject: Subject = request.user
        code: OAuthCode | None = request.authorization_code
        alg = client.row.id_token_signed_response_alg or "RS256"
        claims = tokens.id_token_claims(
            settings=server.token_settings,
            client_id=client.get_client_id(),
            subject=subject,
            nonce=code.get_nonce() if code is not None else None,
            access_token=token.get("access_token"),
            alg=alg,
            now=server.now(),
        )
        return tokens.sign_id_token(claims, server.keys, alg=alg)

    def generate_user_info(self, user: Any, scope: str) -> dict[str, Any]:
        # Claims about the person come from userinfo; the ID token carries `sub` only.
        return {"sub": user.account_id}


class OpenIDCodeExtension(_IdTokenEncoder, OpenIDCode):  # type: ignore[misc]
    """Authlib's `OpenIDCode` (nonce optional, OIDC Core 3.1.2.1) with our ID tokens."""

    def __init__(self) -> None:
        super().__init__(require_nonce=False)

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # Replay of a whole response is stopped by single-use codes and PKCE; the
        # nonce is for the client to check, so it is not tracked here.
        return False


class IdTokenOnRefresh(_IdTokenEncoder, OpenIDToken):  # type: ignore[misc]
    """A fresh ID token on refresh, same `sub`, `auth_time` and `acr` (OIDC Core 12.2)."""
