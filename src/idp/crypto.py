"""Secrets at rest: AES-256-GCM with a key id, and SHA-256 digests of random tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets


class DecryptionError(Exception):
    """A ciphertext could not be decrypted (unknown key id or tampered data)."""


class Encryptor:
    """Encrypts with the current key, decrypts with any configured key.

    The stored form is `kid.base64url(nonce || ciphertext || tag)`, so keys can rotate:
    add a new key first in `IDP_ENCRYPTION_KEYS`, keep the old ones for decryption.
    """

    def __init__(self, keys: dict[str, bytes]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ValueError("at least one encryption key is required")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self.current_kid = next(iter(keys))

    def encrypt(self, plaintext: bytes, *, context: bytes) -> str:
        """Encrypt `plaintext`, binding it to `context` (associated data, e.g. a row id)."""
        nonce = os.urandom(12)
        sealed = self._ciphers[self.current_kid].encrypt(nonce, plaintext, context)
        return f"{self.current_kid}.{_b64(nonce + sealed)}"

    def decrypt(self, token: str, *, context: bytes) -> bytes:
        """Decrypt a value made by `encrypt` with the same `context`."""
        from cryptography.exceptions import InvalidTag

        kid, _, body = token.rpartition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"no encryption key with id {kid!r} is configured")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        try:
            return cipher.decrypt(raw[:12], raw[12:], context)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext failed authentication") from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token with `nbytes` of entropy (default 256 bits)."""
    return secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a high-entropy token: what we store instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))
