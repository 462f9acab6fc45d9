"""Reads a hosted page's form body defensively: size-capped, urlencoded, one value a field.

The pages accept only `application/x-www-form-urlencoded` bodies (what a plain HTML form
sends). A body over `MAX_FORM_BYTES`, another content type, undecodable bytes or a field
sent twice is refused before anything else runs, so a 1 MB "password" costs nothing and
never reaches argon2 (ASVS 6.2.x sets the password limit; this bounds the request).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

#: Comfortably above the largest legitimate form: a 1024-character password of 4-byte
#: characters, percent-encoded, is about 12 KB.
MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 16
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
#: `Sec-Fetch-Site` values of requests started by another site (or a sibling subdomain).
CROSS_SITE = frozenset({"cross-site", "same-site"})


@dataclass(frozen=True)
class BadForm:
    """Why a body was refused: `too_large` or `malformed` (a message key)."""

    reason: str


async def read_form(request: Request) -> dict[str, str] | BadForm:
    """The fields of the request body, or why it was refused."""
    if request.headers.get("sec-fetch-site") in CROSS_SITE:
        # Fetch Metadata (OWASP CSRF cheat sheet): a browser says the form came from
        # another site. Login CSRF cannot be stopped by the transaction's own token alone,
        # since whoever started the transaction can read it; this refuses such posts.
        return BadForm("csrf")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        return BadForm("malformed")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return BadForm("too_large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            # A chunked body without a length is cut off here rather than read whole.
            return BadForm("too_large")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        return BadForm("malformed")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            # A repeated field is not something our forms send; refuse rather than guess.
            return BadForm("malformed")
        fields[name] = value
    return fields
