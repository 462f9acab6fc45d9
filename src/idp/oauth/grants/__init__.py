"""The grants the token issuer speaks, as Authlib grants with our storage and policy.

`authorization_code` (with PKCE S256 required and OpenID Connect ID tokens),
`refresh_token` (rotated at every use) and `client_credentials`. No implicit or
password grant (RFC 9700 2.1.2, 2.4).
"""

from idp.oauth.grants.client_credentials import ClientCredentialsGrant
from idp.oauth.grants.code import AuthorizationCodeGrant
from idp.oauth.grants.openid import IdTokenOnRefresh, OpenIDCodeExtension
from idp.oauth.grants.pkce import RequiredS256CodeChallenge
from idp.oauth.grants.refresh import RefreshTokenGrant

__all__ = [
    "AuthorizationCodeGrant",
    "ClientCredentialsGrant",
    "IdTokenOnRefresh",
    "OpenIDCodeExtension",
    "RefreshTokenGrant",
    "RequiredS256CodeChallenge",
]
