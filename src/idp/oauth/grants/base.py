"""What every grant here shares: the client authentication methods it accepts."""

from __future__ import annotations

#: Client authentication at the token endpoint (OIDC Core 9). `none` is for public
#: clients only: Authlib refuses it for a client registered with another method.
TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
#: The same, minus `none`: grants only confidential clients may use.
CONFIDENTIAL_AUTH_METHODS = [m for m in TOKEN_AUTH_METHODS if m != "none"]
