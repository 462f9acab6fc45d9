"""Our compact JWS (idp.oauth.jws) against an independent implementation (joserfc), and
the tokens it must refuse: wrong algorithm for the key, `none`, `crit`, loose base64url,
DER-encoded ECDSA signatures, payloads that are not objects, unknown keys."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

from idp.oauth import jws

RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"}, private=True)
KEYS: dict[str, Key] = {"rsa-1": RSA, "ec-1": EC}
CLAIMS = {"iss": "https://idp.example", "sub": "a", "exp": 2_000_000_000, "scope": "x y"}


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hand_signed(header: dict[str, Any], payload: bytes, key: Key) -> str:
    """A token signed outside both implementations, header and payload as given."""
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(payload)
    native = key.private_key
    if isinstance(key, RSAKey):
        signature = native.sign(signing_input, padding.PKCS1v15(), SHA256())  # type: ignore[union-attr,call-arg]
    else:
        signature = native.sign(signing_input, ec.ECDSA(SHA256()))  # type: ignore[union-attr,call-arg]
    return (signing_input + b"." + b64(signature)).decode()


@pytest.mark.parametrize(("alg", "key"), [("RS256", RSA), ("ES256", EC)])
def test_our_tokens_verify_with_joserfc_and_joserfc_tokens_with_ours(alg: str, key: Key) -> None:
    ours = jws.sign(CLAIMS, key, alg=alg, typ="at+jwt")
    decoded = jwt.decode(ours, key, algorithms=[alg])
    assert decoded.claims == CLAIMS
    assert decoded.header == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}

    theirs = jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, CLAIMS, key)
    header, claims = jws.verify(theirs, KEYS)
    assert claims == CLAIMS
    assert header["typ"] == "JWT"
    assert header["kid"] == key.kid


def test_a_key_signs_only_its_own_algorithm() -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        jws.sign(CLAIMS, RSA, alg="ES256", typ="JWT")
    with pytest.raises(ValueError, match="cannot sign"):
        jws.sign(CLAIMS, EC, alg="RS256", typ="JWT")


def _resigned(token: str, **header: Any) -> str:
    """`token`'s payload under another header, validly signed by the key its kid names."""
    payload = jws.b64url_decode(token.split(".")[1].encode())
    return hand_signed(header, payload, KEYS[header["kid"]])


def test_the_algorithm_must_match_the_key_its_kid_names() -> None:
    token = jws.sign(CLAIMS, RSA, alg="RS256", typ="JWT")
    # The RSA key's signature presented as ES256 (or the other way round) never verifies.
    _, payload, signature = token.split(".")
    relabelled = b64(json.dumps({"alg": "ES256", "kid": "rsa-1"}).encode()).decode()
    for forged in (
        f"{relabelled}.{payload}.{signature}",
        _resigned(token, alg="RS256", kid="ec-1"),
    ):
        with pytest.raises(jws.JWSError):
            jws.verify(forged, KEYS)


@pytest.mark.parametrize("alg", ["none", "HS256", "PS256", "RS512", "ES384", None])
def test_other_algorithms_are_refused(alg: str | None) -> None:
    header = b64(json.dumps({"alg": alg, "kid": "rsa-1"}).encode()).decode()
    token = jws.sign(CLAIMS, RSA, alg="RS256", typ="JWT")
    with pytest.raises(jws.JWSError, match="algorithm"):
        jws.verify(f"{header}.{token.split('.')[1]}.{token.split('.')[2]}", KEYS)


def test_critical_header_parameters_are_refused() -> None:
    token = hand_signed(
        {"alg": "RS256", "kid": "rsa-1", "b64": False, "crit": ["b64"]},
        json.dumps(CLAIMS).encode(),
        RSA,
    )
    with pytest.raises(jws.JWSError, match="critical"):
        jws.verify(token, KEYS)


def test_a_der_encoded_ecdsa_signature_is_refused() -> None:
    token = hand_signed({"alg": "ES256", "kid": "ec-1"}, json.dumps(CLAIMS).encode(), EC)
    with pytest.raises(jws.JWSError):
        jws.verify(token, KEYS)


def test_the_payload_must_be_a_json_object() -> None:
    for payload in (b"[1, 2]", b'"text"', b"not json"):
        token = hand_signed({"alg": "RS256", "kid": "rsa-1"}, payload, RSA)
        with pytest.raises(jws.JWSError, match="JSON"):
            jws.verify(token, KEYS)


def test_unknown_kid_and_missing_kid_are_refused() -> None:
    token = jws.sign(CLAIMS, RSA, alg="RS256", typ="JWT")
    with pytest.raises(jws.JWSError, match="unknown kid"):
        jws.verify(token, {"ec-1": EC})
    no_kid = hand_signed({"alg": "RS256"}, json.dumps(CLAIMS).encode(), RSA)
    with pytest.raises(jws.JWSError, match="no kid"):
        jws.verify(no_kid, KEYS)


def test_the_signature_covers_header_and_payload() -> None:
    token = jws.sign(CLAIMS, RSA, alg="RS256", typ="JWT")
    header, _, signature = token.split(".")
    other = b64(json.dumps({**CLAIMS, "sub": "b"}).encode()).decode()
    with pytest.raises(jws.JWSError, match="bad signature"):
        jws.verify(f"{header}.{other}.{signature}", KEYS)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "=",  # padding
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",
        lambda t: t + ".extra",
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t + "é",
        lambda t: t[:-1] + "!",
    ],
)
def test_malformed_compact_serialisations_are_refused(mangle: Any) -> None:
    token = jws.sign(CLAIMS, EC, alg="ES256", typ="JWT")
    with pytest.raises(jws.JWSError):
        jws.verify(mangle(token), KEYS)


def test_base64url_round_trips_every_length() -> None:
    for n in range(40):
        data = bytes(range(256))[:n] * 3
        assert jws.b64url_decode(jws.b64url(data)) == data
        assert jws.b64url(data) == b64(data)


def test_a_verified_token_is_accepted_again_only_while_its_key_is_published() -> None:
    token = jws.sign(CLAIMS, EC, alg="ES256", typ="JWT")
    header, claims = jws.verify(token, KEYS)
    claims["sub"] = "changed by a caller"  # callers get copies
    assert jws.verify(token, KEYS)[1] == CLAIMS
    with pytest.raises(jws.JWSError, match="unknown kid"):  # retired: no longer published
        jws.verify(token, {"rsa-1": RSA})
    replaced = ECKey.generate_key("P-256", parameters={"kid": "ec-1"}, private=True)
    with pytest.raises(jws.JWSError, match="bad signature"):  # same kid, another key
        jws.verify(token, {"ec-1": replaced})
    assert header == {"alg": "ES256", "kid": "ec-1", "typ": "JWT"}
