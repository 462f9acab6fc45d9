"""CSRF tokens for the hosted pages' forms (issue 4 point 6, OWASP ASVS 3.5.1).

A token is stored server-side (on the login transaction or the browser session) and echoed
in a hidden `csrf_token` field; a POST is accepted only when the two match.
"""

from __future__ import annotations

import hmac
import secrets

#: Bytes of randomness in a token: 256 bits, well beyond guessing.
TOKEN_BYTES = 32

#: Longer submitted values are refused before comparing, so a huge field costs nothing.
MAX_TOKEN_LENGTH = 128


def new_csrf_token() -> str:
    """A fresh, URL-safe CSRF token from the operating system's CSPRNG."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def csrf_valid(expected: str | None, given: str | None) -> bool:
    """Whether `given` matches `expected`, compared in constant time; empty never matches."""
    if not expected or not given or len(given) > MAX_TOKEN_LENGTH:
        return False
    # compare_digest on bytes: non-ASCII input must be refused, not raise TypeError.
    return hmac.compare_digest(expected.encode(), given.encode())
