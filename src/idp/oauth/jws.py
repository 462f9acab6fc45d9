"""Compact JWS (RFC 7515) for our own tokens, RS256 and ES256 only, straight on
`cryptography`.

Every token the provider issues is signed here, and every one it is shown back (access
tokens at introspection and userinfo, `id_token_hint`) is verified here. A general JOSE
library spends more on its generality (header registries, claim conversion, JSON with the
standard library) than OpenSSL spends on an ES256 signature, so this module does only what
our tokens need, and refuses everything else:

- the algorithm comes from the key that signs; when verifying, the header's `alg` must be
  one we issue *and* match the type of the key its `kid` names (no algorithm confusion,
  RFC 8725 2.1; `none` and HMAC are never accepted);
- a header with `crit` (RFC 7515 4.1.11), e.g. unencoded payloads (RFC 7797), is refused;
- base64url is decoded strictly (no padding, no characters outside the alphabet);
- an ES256 signature is the 64-byte `r || s` of RFC 7518 3.4, nothing else.

Keys are joserfc `JWK`s (how the keyring holds them); only their native `cryptography`
keys are used here.
"""

from __future__ import annotations

import binascii
import functools
import threading
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc.jwk import Key

#: What we sign with and what we accept.
ALGS = ("RS256", "ES256")
_ES256_HALF = 32
_B64_ENCODE = bytes.maketrans(b"+/", b"-_")
_B64_DECODE = bytes.maketrans(b"-_", b"+/")


class JWSError(Exception):
    """Not a well-formed compact JWS of ours, or its signature does not verify."""


class UnknownKeyError(JWSError):
    """The token names a `kid` the keys given do not have (perhaps a newer key)."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown kid")
        self.kid = kid


def b64url(data: bytes) -> bytes:
    """Base64url without padding (RFC 7515 2)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_B64_ENCODE)


def b64url_decode(data: bytes) -> bytes:
    """Strict base64url without padding; JWSError for anything else."""
    if b"=" in data or b"+" in data or b"/" in data:
        raise JWSError("not base64url")
    try:
        return binascii.a2b_base64(
            data.translate(_B64_DECODE) + b"=" * (-len(data) % 4), strict_mode=True
        )
    except binascii.Error:
        raise JWSError("not base64url") from None


@functools.lru_cache(maxsize=64)
def _encoded_header(alg: str, kid: str, typ: str) -> bytes:
    return b64url(orjson.dumps({"alg": alg, "kid": kid, "typ": typ}))


def sign(claims: dict[str, Any], key: Key, *, alg: str, typ: str) -> str:
    """`claims` as a compact JWS signed by `key` with `alg`, header `alg`, `kid`, `typ`."""
    kid = key.kid
    if kid is None:
        raise ValueError("a signing key needs a kid")
    signing_input = _encoded_header(alg, kid, typ) + b"." + b64url(orjson.dumps(claims))
    native = key.private_key
    if alg == "RS256" and isinstance(native, rsa.RSAPrivateKey):
        signature = native.sign(signing_input, padding.PKCS1v15(), SHA256())
    elif alg == "ES256" and isinstance(native, ec.EllipticCurvePrivateKey):
        if not isinstance(native.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        r, s = decode_dss_signature(native.sign(signing_input, ec.ECDSA(SHA256())))
        signature = r.to_bytes(_ES256_HALF, "big") + s.to_bytes(_ES256_HALF, "big")
    else:
        raise ValueError(f"cannot sign {alg} with this key")
    return (signing_input + b"." + b64url(signature)).decode("ascii")


class _Verified:
    """Tokens whose signature verified, with the key object that verified them: a
    resource server introspects the same access token at every call, and an ES256
    verification costs three times a signature. An entry is used only while the same key
    object is published under its `kid` (a rotation or retirement replaces the objects),
    so nothing is accepted that a fresh verification would refuse. Bounded, oldest out."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[str, tuple[Key, dict[str, Any], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(
        self, token: str, key_for_kid: Mapping[str, Key]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        key, header, claims = entry
        if key_for_kid.get(header["kid"]) is not key:
            return None
        return dict(header), dict(claims)

    def put(self, token: str, key: Key, header: dict[str, Any], claims: dict[str, Any]) -> None:
        with self._lock:
            if token not in self._entries and len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (key, dict(header), dict(claims))


_VERIFIED = _Verified(size=2048)


def verify(token: str, key_for_kid: Mapping[str, Key]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of `token` if one of these keys (by `kid`) signed it with the
    algorithm that key is for; JWSError otherwise."""
    known = _VERIFIED.get(token, key_for_kid)
    if known is not None:
        return known
    header, claims, key = _verify(token, key_for_kid)
    _VERIFIED.put(token, key, header, claims)
    return header, claims


def _verify(
    token: str, key_for_kid: Mapping[str, Key]
) -> tuple[dict[str, Any], dict[str, Any], Key]:
    try:
        encoded = token.encode("ascii")
    except UnicodeEncodeError:
        raise JWSError("not a compact JWS") from None
    parts = encoded.split(b".")
    if len(parts) != 3:
        raise JWSError("not a compact JWS")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(b64url_decode(header_b64))
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGS or not isinstance(kid, str):
        raise JWSError("not one of our algorithms, or no kid")
    if "crit" in header:
        raise JWSError("critical header parameters are not supported")
    key = key_for_kid.get(kid)
    if key is None:
        raise UnknownKeyError(kid)
    if key.get("alg") not in (None, alg):
        raise JWSError("the key is for another algorithm")
    signature = b64url_decode(signature_b64)
    signing_input = header_b64 + b"." + payload_b64
    public = key.public_key
    try:
        if alg == "RS256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, signing_input, padding.PKCS1v15(), SHA256())
        elif (
            alg == "ES256"
            and isinstance(public, ec.EllipticCurvePublicKey)
            and isinstance(public.curve, ec.SECP256R1)
            and len(signature) == 2 * _ES256_HALF
        ):
            r = int.from_bytes(signature[:_ES256_HALF], "big")
            s = int.from_bytes(signature[_ES256_HALF:], "big")
            public.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(SHA256()))
        else:
            raise JWSError("the key does not match the algorithm")
    except InvalidSignature:
        raise JWSError("bad signature") from None
    return header, _json_object(b64url_decode(payload_b64)), key


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise JWSError("not JSON") from None
    if not isinstance(value, dict):
        raise JWSError("not a JSON object")
    return value
