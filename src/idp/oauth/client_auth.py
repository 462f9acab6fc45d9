"""`private_key_jwt` client authentication (OIDC Core 9, RFC 7523 2.2 and 3).

Authlib verifies the assertion (signature with the client's registered JWKS, `iss` =
`sub` = client id, `aud`, `exp`); we supply the audiences, the keys and a replay guard
shared by every process (the `jti`, RFC 7523 3 item 7).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc.jwk import KeySet

from idp.oauth import store
from idp.oauth.context import current_db

#: Assertions must expire within an hour (Authlib's and most libraries' default lifetime
#: or less); the replay record is kept until then.
MAX_ASSERTION_SECONDS = 3600 + 60


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """The `private_key_jwt` method, registered on the server under that name."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, *, issuer: str) -> None:
        super().__init__(validate_jti=True, leeway=60)
        self.issuer = issuer

    def get_audiences(self) -> list[str]:
        # OIDC Core 9: the audience is the token endpoint; the issuer identifies the
        # authorization server too (RFC 7523 3 item 3), and the introspection and
        # revocation endpoints name where those assertions are sent.
        return [
            f"{self.issuer}/token",
            self.issuer,
            f"{self.issuer}/introspect",
            f"{self.issuer}/revoke",
        ]

    def resolve_client_public_key(self, client: Any) -> KeySet:
        jwks = client.row.jwks
        if not jwks or not jwks.get("keys"):
            raise InvalidClientError(description="The client has no registered keys.")
        return KeySet.import_key_set(jwks)

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        if not isinstance(jti, str) or not jti or len(jti) > 200:
            return False
        exp = claims.get("exp")
        now = dt.datetime.now(dt.UTC)
        if not isinstance(exp, int):
            return False
        expires_at = dt.datetime.fromtimestamp(exp, dt.UTC)
        if expires_at - now > dt.timedelta(seconds=MAX_ASSERTION_SECONDS):
            # A long-lived assertion would need a long-lived replay record.
            return False
        return store.use_client_assertion(
            current_db(),
            client_id=str(claims["sub"]),
            jti=jti,
            expires_at=max(expires_at, now) + dt.timedelta(seconds=self.leeway),
        )
