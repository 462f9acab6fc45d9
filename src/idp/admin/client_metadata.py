"""Validation of client registration metadata: redirect URIs, grant types, token
endpoint authentication, JWKS, scope and ID token algorithm.

Each refusal is an `InvalidClientMetadata` (a `ValueError`) whose message says what is
wrong, named after the RFC 7591 3.2.2 error codes (`invalid_redirect_uri`,
`invalid_client_metadata`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
ID_TOKEN_ALGS = ("RS256", "ES256")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_URI_LENGTH = 2000
#: Members that only private (or symmetric) JWKs carry (RFC 7518 6.2.2, 6.3.2, 6.4.1).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
#: RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class InvalidClientMetadata(ValueError):  # noqa: N818 (RFC 7591 error name)
    """Registration metadata that cannot be accepted; the message says why."""


class InvalidRedirectUri(InvalidClientMetadata):
    """A redirect URI (or post-logout redirect URI) that cannot be registered."""


def redirect_uris(uris: Sequence[str], *, label: str = "redirect URI") -> list[str]:
    """Validated URIs in the given order, duplicates dropped."""
    if isinstance(uris, str):
        uris = [uris]
    seen: list[str] = []
    for uri in uris:
        check_redirect_uri(uri, label=label)
        if uri not in seen:
            seen.append(uri)
    return seen


def check_redirect_uri(uri: str, *, label: str = "redirect URI") -> None:
    """Refuse a URI that could leak codes (RFC 6749 3.1.2, RFC 8252 7, RFC 9700 2.1, 4.1.3)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidRedirectUri(f"The {label} is empty.")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidRedirectUri(f"The {label} is longer than {MAX_URI_LENGTH} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in uri):
        raise InvalidRedirectUri(f"The {label} {uri!r} contains spaces or control characters.")
    if "#" in uri:
        # RFC 6749 3.1.2: the endpoint URI MUST NOT include a fragment component.
        raise InvalidRedirectUri(f"The {label} {uri!r} must not contain a fragment (#).")
    if "*" in uri:
        # RFC 9700 2.1: exact string matching, so no wildcard patterns.
        raise InvalidRedirectUri(f"The {label} {uri!r} must not contain a wildcard (*).")
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise InvalidRedirectUri(f"The {label} {uri!r} is not a valid URI: {exc}.") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        # RFC 6749 3.1.2: the redirection endpoint URI MUST be an absolute URI.
        raise InvalidRedirectUri(f"The {label} {uri!r} must be absolute (start with https://).")
    if scheme in ("https", "http"):
        _check_web_uri(uri, scheme=scheme, host=parts.hostname, netloc=parts.netloc, label=label)
        return
    # RFC 8252 7.1: a native app's private-use scheme is a reverse domain name it controls;
    # this also refuses javascript:, data:, file: and the like.
    if "." not in scheme:
        raise InvalidRedirectUri(
            f"The {label} {uri!r} uses the scheme {scheme!r}: use https, http on a loopback "
            "address, or a native app scheme in reverse domain form (com.example.app:/cb)."
        )
    if parts.netloc or not parts.path:
        raise InvalidRedirectUri(
            f"The {label} {uri!r} must look like {scheme}:/path (RFC 8252 7.1)."
        )


def _check_web_uri(uri: str, *, scheme: str, host: str | None, netloc: str, label: str) -> None:
    if not host:
        raise InvalidRedirectUri(f"The {label} {uri!r} has no host.")
    if "@" in netloc:
        raise InvalidRedirectUri(f"The {label} {uri!r} must not contain a user name or password.")
    if scheme == "http" and host.lower() not in LOOPBACK_HOSTS:
        # RFC 9700 2.1 / RFC 8252 7.3: plain http only to the loopback interface.
        raise InvalidRedirectUri(
            f"The {label} {uri!r} must use https (http is allowed only for localhost, "
            "127.0.0.1 and [::1])."
        )


def grant_types(
    requested: Sequence[str] | None, *, public: bool, redirect_uris: Sequence[str]
) -> list[str]:
    """Validated grant types; default authorization_code and refresh_token."""
    chosen = list(DEFAULT_GRANT_TYPES) if requested is None else list(dict.fromkeys(requested))
    if not chosen:
        raise InvalidClientMetadata("Give at least one grant type.")
    unknown = [g for g in chosen if g not in GRANT_TYPES]
    if unknown:
        # RFC 9700 2.1.2 / 2.4: no implicit or password grant.
        raise InvalidClientMetadata(
            f"Unsupported grant type {unknown[0]!r}: use {', '.join(GRANT_TYPES)}."
        )
    if public and "client_credentials" in chosen:
        # RFC 6749 4.4: the client credentials grant is for confidential clients only.
        raise InvalidClientMetadata("A public client cannot use the client_credentials grant.")
    if "refresh_token" in chosen and "authorization_code" not in chosen:
        # RFC 6749 4.4.3: client_credentials issues no refresh token; only codes lead to one.
        raise InvalidClientMetadata("The refresh_token grant needs authorization_code too.")
    if "authorization_code" in chosen and not redirect_uris:
        raise InvalidClientMetadata("The authorization_code grant needs a redirect URI.")
    return chosen


def auth_method(method: str | None, *, public: bool) -> str:
    """The token endpoint authentication method (RFC 7591 2); `none` for public clients."""
    if method is None:
        return "none" if public else "client_secret_basic"
    if method not in AUTH_METHODS:
        raise InvalidClientMetadata(
            f"Unsupported token endpoint auth method {method!r}: use {', '.join(AUTH_METHODS)}."
        )
    if public and method != "none":
        raise InvalidClientMetadata(
            f"A public client has no secret or key: its auth method is 'none', not {method!r}."
        )
    return method


def jwks(value: dict[str, Any] | None, *, required: bool) -> dict[str, Any] | None:
    """A validated public JWK Set (RFC 7517 5) for `private_key_jwt` (RFC 7523 2.2)."""
    if value is None:
        if required:
            raise InvalidClientMetadata("private_key_jwt needs a JWK Set with a public key.")
        return None
    keys = value.get("keys") if isinstance(value, dict) else None
    if not isinstance(keys, list) or not keys:
        raise InvalidClientMetadata('The JWK Set must be {"keys": [...]} with at least one key.')
    kids = [k.get("kid") for k in keys if isinstance(k, dict)]
    if len(keys) > 1 and (None in kids or len(set(kids)) != len(keys)):
        raise InvalidClientMetadata("Each key of a JWK Set with several keys needs its own kid.")
    for key in keys:
        _check_public_jwk(key)
    return {"keys": [dict(k) for k in keys]}


def _check_public_jwk(key: object) -> None:
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if not isinstance(key, dict):
        raise InvalidClientMetadata("Each JWK must be a JSON object.")
    if key.get("kty") not in ("RSA", "EC", "OKP"):
        raise InvalidClientMetadata("Each JWK must be a public RSA, EC or OKP key.")
    if PRIVATE_JWK_MEMBERS & key.keys():
        # A private key must never leave the client; refuse it rather than store it.
        raise InvalidClientMetadata(
            "The JWK Set contains private key material: send only public keys."
        )
    if key.get("use", "sig") != "sig":
        raise InvalidClientMetadata("Each JWK must be a signing key (use 'sig').")
    try:
        [imported] = KeySet.import_key_set({"keys": [key]}).keys
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidClientMetadata(f"A JWK could not be read: {exc}.") from exc
    raw = imported.raw_value
    if isinstance(raw, rsa.RSAPublicKey) and raw.key_size < MIN_RSA_BITS:
        # NIST SP 800-131A: RSA signatures need at least 2048-bit moduli.
        raise InvalidClientMetadata(f"RSA keys must have at least {MIN_RSA_BITS} bits.")


def id_token_alg(alg: str) -> str:
    """The ID token signing algorithm: RS256 (OIDC Core 15.1 default) or ES256."""
    if alg not in ID_TOKEN_ALGS:
        raise InvalidClientMetadata(
            f"Unsupported ID token algorithm {alg!r}: use {' or '.join(ID_TOKEN_ALGS)}."
        )
    return alg


def scope(value: str) -> str:
    """Space-separated scope tokens (RFC 6749 3.3), duplicates dropped."""
    tokens = list(dict.fromkeys(value.split())) if isinstance(value, str) else []
    if not tokens:
        raise InvalidClientMetadata("Give at least one scope, e.g. 'openid email profile'.")
    for token in tokens:
        if not _SCOPE_TOKEN.fullmatch(token):
            raise InvalidClientMetadata(f"The scope {token!r} contains characters not allowed.")
    return " ".join(tokens)
