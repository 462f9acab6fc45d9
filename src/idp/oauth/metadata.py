"""The provider's metadata: OpenID Connect Discovery 1.0 section 3 and RFC 8414 section 2.

One document serves both well-known URIs (RFC 8414 section 3 allows the OIDC fields
alongside its own). It depends only on the issuer, so its bytes are built once.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from idp.oauth.acr import ACR_LEVELS
from idp.oauth.keys import SUPPORTED_ALGS
from idp.settings import Settings

#: Paths of the protocol endpoints, relative to the issuer.
AUTHORIZATION_PATH = "/authorize"
TOKEN_PATH = "/token"  # noqa: S105 (a path, not a secret)
USERINFO_PATH = "/userinfo"
JWKS_PATH = "/jwks.json"
INTROSPECTION_PATH = "/introspect"
REVOCATION_PATH = "/revoke"
END_SESSION_PATH = "/logout"
OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"
OAUTH_SERVER_METADATA_PATH = "/.well-known/oauth-authorization-server"

SCOPES_SUPPORTED = ("openid", "email", "profile", "offline_access")
GRANT_TYPES_SUPPORTED = ("authorization_code", "refresh_token", "client_credentials")
#: Client authentication at the token endpoint (OIDC Core 9; RFC 7523 for private_key_jwt);
#: `none` only for public clients, which PKCE protects instead (RFC 9700 2.1.1).
TOKEN_ENDPOINT_AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)
#: Introspection (RFC 7662 2.1) needs an authenticated, confidential client.
PROTECTED_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
#: Revocation (RFC 7009 2.1): public clients revoke their own tokens with `none`.
REVOCATION_ENDPOINT_AUTH_METHODS = TOKEN_ENDPOINT_AUTH_METHODS
#: Algorithms accepted on `private_key_jwt` client assertions.
CLIENT_ASSERTION_ALGS = SUPPORTED_ALGS
CLAIMS_SUPPORTED = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "at_hash",
    "email",
    "email_verified",
    "name",
    "updated_at",
)


def discovery_document(settings: Settings) -> dict[str, Any]:
    """The metadata document for `settings.issuer`."""
    return _document(settings.issuer)


def discovery_bytes(settings: Settings) -> bytes:
    """The metadata document as JSON bytes, built once per issuer."""
    return _document_bytes(settings.issuer)


@lru_cache(maxsize=8)
def _document_bytes(issuer: str) -> bytes:
    return json.dumps(_document(issuer), separators=(",", ":")).encode("utf-8")


def _document(issuer: str) -> dict[str, Any]:
    # OIDC Discovery 4.3 / RFC 8414 3.3: `issuer` must equal the URL the document was
    # fetched under, so it is the configured issuer verbatim (no trailing slash).
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "userinfo_endpoint": issuer + USERINFO_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "end_session_endpoint": issuer + END_SESSION_PATH,
        "scopes_supported": list(SCOPES_SUPPORTED),
        # RFC 9700 2.1.2: no implicit or hybrid flows, only the code flow.
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": list(GRANT_TYPES_SUPPORTED),
        "subject_types_supported": ["public"],
        # OIDC Core 15.1: RS256 is the default and must be supported.
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "token_endpoint_auth_methods_supported": list(TOKEN_ENDPOINT_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "introspection_endpoint_auth_methods_supported": list(PROTECTED_ENDPOINT_AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "revocation_endpoint_auth_methods_supported": list(REVOCATION_ENDPOINT_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "claims_supported": list(CLAIMS_SUPPORTED),
        "claim_types_supported": ["normal"],
        # RFC 9700 2.1.1: PKCE with S256 for every client; `plain` is refused.
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": list(ACR_LEVELS),
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        # RFC 9207 3: `iss` in every authorization response, errors included.
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
    }
