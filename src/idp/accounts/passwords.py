"""Passwords: the acceptance policy, argon2id hashing, verification and rehash checks.

Policy (NIST SP 800-63B 3.1.1.2, OWASP ASVS 5.0 6.2): at least 8 characters (a second
factor is mandatory), any Unicode, NFKC-normalised, never truncated, no composition
rules, refused when common or breached, and the reason is always shown. An upper bound
on input size keeps the hash from being abused to burn CPU and memory.
"""

from __future__ import annotations

import functools
import unicodedata
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from idp.accounts import argon2_memory

#: ASVS 6.2.1 / NIST 3.1.1.2: at least 8 characters when MFA is mandatory.
MIN_LENGTH = 8
#: ASVS 6.2.9 wants at least 64 allowed; this bound only stops abuse of the hash.
MAX_LENGTH = 1024
MAX_BYTES = 4096

#: OWASP Password Storage Cheat Sheet, argon2id row: m=19 MiB, t=2, p=1.
_HASHER = PasswordHasher(
    time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)

_BLOCKLIST_RESOURCE = "data/common-passwords.txt"


class PasswordRejected(ValueError):  # noqa: N818 (the name callers use)
    """A password the policy refuses; `reason` is a sentence to show the person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@functools.cache
def blocklist() -> frozenset[str]:
    """The shipped common and breached passwords (NFKC, case-folded), read once."""
    text = resources.files("idp.accounts").joinpath(_BLOCKLIST_RESOURCE).read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line)


def normalise(password: str) -> str:
    """NFKC form of a password (ASVS 6.2.x), refusing oversize input before and after.

    Oversize input is refused rather than truncated, so no two different long
    passwords can ever hash alike.
    """
    if not isinstance(password, str):
        raise PasswordRejected("The password must be text.")
    too_long = PasswordRejected(f"Use at most {MAX_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        # Checked before NFKC, which can expand text up to 18 times.
        raise too_long
    normalised = unicodedata.normalize("NFKC", password)
    if len(normalised) > MAX_LENGTH or len(normalised.encode("utf-8")) > MAX_BYTES:
        raise too_long
    return normalised


def check_password_policy(password: str, *, email: str | None = None) -> None:
    """Raise `PasswordRejected` with a reason if `password` may not be used."""
    normalised = normalise(password)
    if len(normalised) < MIN_LENGTH:
        # ASVS 6.2.1; length counts characters (code points), never bytes.
        raise PasswordRejected(f"Use at least {MIN_LENGTH} characters.")
    folded = normalised.casefold()
    if folded in blocklist():
        # ASVS 6.2.4, NIST 3.1.1.2: refuse known common and breached passwords.
        raise PasswordRejected(
            "This password is too common: it appears in lists of breached passwords. "
            "Choose another one."
        )
    if email and folded in _context_words(email):
        # ASVS 6.2.11 / NIST 3.1.1.2: context-specific words such as the username.
        raise PasswordRejected("Do not use your email address as your password.")


def _context_words(email: str) -> set[str]:
    address = unicodedata.normalize("NFKC", email).strip().casefold()
    local = address.partition("@")[0]
    return {address, local}


def hash_password(password: str) -> str:
    """An argon2id hash of the NFKC form of `password` (salted, PHC string format)."""
    return _HASHER.hash(normalise(password))


def verify_password(password_hash: str, password: str) -> bool:
    """True if `password` matches `password_hash`; never raises on a mismatch or bad hash."""
    try:
        normalised = normalise(password)
    except PasswordRejected:
        return False
    if not isinstance(password_hash, str) or not password_hash:
        return False
    try:  # argon2-cffi's verify, on working memory kept between verifications
        return argon2_memory.verify(password_hash, normalised, memory_cost_kib=_HASHER.memory_cost)
    except (VerificationError, InvalidHashError):
        # VerifyMismatchError is a VerificationError; a corrupt stored hash is InvalidHash.
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if `password_hash` was made with other parameters (upgrade at next sign-in)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


#: A fixed hash with the current parameters, of a password nobody is told.
_DUMMY_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$"
    "9Fasp2dA9W77utdG/CVOxw$gBOXhYxs9UDFVjutdQ+7OLd175qvBbIRX0EnvFTIhQc"
)


def verify_dummy(password: str) -> None:
    """Spend the time of one verification, for unknown accounts (ASVS 6.3.8)."""
    verify_password(_DUMMY_HASH, password)
