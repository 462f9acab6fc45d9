"""PKCE (RFC 7636) as this provider requires it: S256 for every client."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge


class RequiredS256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """Authlib's `CodeChallenge`, stricter at the authorization endpoint.

    RFC 9700 2.1.1: PKCE for every client, confidential ones too, and `plain` refused
    (a missing `code_challenge_method` means `plain`, RFC 7636 4.3). At the token
    endpoint Authlib already refuses a `code_verifier` sent for a code issued without a
    challenge (RFC 9700 4.8.2, the PKCE downgrade) and a wrong one (`invalid_grant`).
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (Authlib's attribute)
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)
