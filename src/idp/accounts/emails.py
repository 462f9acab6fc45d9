"""Email addresses: parse what a person typed into a display form and a uniqueness key.

Two addresses that differ only by case, Unicode compatibility form or the spelling of an
internationalised domain get the same `key`, and the database has a unique index on that
key, so they can never belong to two accounts. Nothing here looks anything up in DNS:
an address is judged by its syntax alone.

Accepted syntax is the RFC 5321/5322 `dot-atom` local part (RFC 6531 adds any non-ASCII
character) at a domain name of at least two labels. Quoted local parts, comments and
address literals (`user@[192.0.2.1]`) are refused: real mailboxes for people do not need
them, and each is a way to spell one mailbox many ways.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import idna

#: RFC 5321 4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_ADDRESS_LENGTH = 254
#: RFC 5321 4.5.3.1.1 (octets of UTF-8, RFC 6531 3.3).
MAX_LOCAL_OCTETS = 64
#: RFC 1035 2.3.4.
MAX_DOMAIN_OCTETS = 253
MAX_LABEL_OCTETS = 63

#: RFC 5322 3.2.3 `atext` outside letters and digits; `.` is allowed between atoms.
_ATEXT_SYMBOLS = frozenset("!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class InvalidEmail(ValueError):  # noqa: N818 (the name callers use)
    """An address that cannot be accepted; the message says what is wrong with it."""


@dataclass(frozen=True)
class EmailAddress:
    """A parsed address: `display` as typed (trimmed, NFKC), `key` for uniqueness."""

    display: str
    key: str


def parse_email(raw: str) -> EmailAddress:
    """Parse and validate `raw`, or raise `InvalidEmail` saying what is wrong."""
    if not isinstance(raw, str):
        raise InvalidEmail("Email address must be text.")
    if len(raw) > 4 * MAX_ADDRESS_LENGTH:
        # Refuse absurd input before normalising it (NFKC can expand text).
        raise InvalidEmail(f"Email address is too long (at most {MAX_ADDRESS_LENGTH} characters).")
    display = unicodedata.normalize("NFKC", raw).strip()
    if not display:
        raise InvalidEmail("Email address is empty.")
    if len(display) > MAX_ADDRESS_LENGTH:
        raise InvalidEmail(f"Email address is too long (at most {MAX_ADDRESS_LENGTH} characters).")
    if any(_is_space_or_control(ch) for ch in display):
        raise InvalidEmail("Email address must not contain spaces or control characters.")
    at_signs = display.count("@")
    if at_signs == 0:
        raise InvalidEmail("Email address must contain an @, as in name@example.org.")
    if at_signs > 1:
        raise InvalidEmail("Email address must contain only one @.")
    local, domain = display.split("@")
    if not local:
        raise InvalidEmail("Email address has nothing before the @.")
    if not domain:
        raise InvalidEmail("Email address has no domain after the @.")
    _check_local(local)
    ascii_domain = _ascii_domain(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS_LENGTH:
        # RFC 5321 4.5.3.1.3 counts octets as sent: UTF-8 local part, A-label domain.
        raise InvalidEmail(
            f"Email address is too long once its domain is encoded for email "
            f"(at most {MAX_ADDRESS_LENGTH} characters)."
        )
    # NFKC again after case folding: folding can produce text that is not in NFKC form.
    local_key = unicodedata.normalize("NFKC", local.casefold())
    return EmailAddress(display=display, key=f"{local_key}@{ascii_domain}")


def _is_space_or_control(ch: str) -> bool:
    # Categories C* (control, format such as zero-width joiners, unassigned, private use)
    # and Z* (separators): invisible characters would let one address look like another.
    return ch.isspace() or unicodedata.category(ch)[0] in ("C", "Z")


def _check_local(local: str) -> None:
    """RFC 5322 3.4.1 dot-atom local part, RFC 6531 3.3 UTF-8 allowed."""
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise InvalidEmail(
            f"The part before the @ is too long (at most {MAX_LOCAL_OCTETS} characters)."
        )
    if local.startswith(".") or local.endswith("."):
        raise InvalidEmail("The part before the @ must not start or end with a dot.")
    if ".." in local:
        raise InvalidEmail("The part before the @ must not contain two dots in a row.")
    for ch in local:
        if ch.isascii() and not (ch.isalnum() or ch == "." or ch in _ATEXT_SYMBOLS):
            raise InvalidEmail(f"The part before the @ must not contain {ch!r}.")


def _ascii_domain(domain: str) -> str:
    """The domain as lower-case ASCII (IDNA 2008 A-labels, UTS 46 mapping)."""
    if domain.startswith("[") or domain.endswith("]"):
        raise InvalidEmail("Use a domain name after the @, not an IP address.")
    if domain.endswith("."):
        raise InvalidEmail("The domain must not end with a dot.")
    if "." not in domain:
        raise InvalidEmail("The domain must contain a dot, as in example.org.")
    if domain.startswith(".") or ".." in domain:
        raise InvalidEmail("The domain must not contain an empty part (two dots in a row).")
    if domain.isascii():
        ascii_domain = domain.lower()
        _check_ascii_labels(ascii_domain)
    else:
        try:
            # UTS 46 maps case and compatibility forms first; std3_rules keeps LDH labels.
            ascii_domain = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError and punycode failures
            raise InvalidEmail(f"The domain is not a valid internationalised name: {exc}.") from exc
        ascii_domain = ascii_domain.lower()
        _check_ascii_labels(ascii_domain)
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise InvalidEmail(f"The domain is too long (at most {MAX_DOMAIN_OCTETS} characters).")
    return ascii_domain


def _check_ascii_labels(ascii_domain: str) -> None:
    """RFC 1035 2.3.1 / RFC 5891 4.2.3: letters, digits and inner hyphens, 1-63 octets."""
    labels = ascii_domain.split(".")
    for label in labels:
        if not label:
            raise InvalidEmail("The domain must not contain an empty part (two dots in a row).")
        if len(label) > MAX_LABEL_OCTETS:
            raise InvalidEmail(
                f"Each part of the domain must be at most {MAX_LABEL_OCTETS} characters."
            )
        if not set(label) <= _LDH:
            bad = next(ch for ch in label if ch not in _LDH)
            raise InvalidEmail(f"The domain must not contain {bad!r}.")
        if label.startswith("-") or label.endswith("-"):
            raise InvalidEmail("A part of the domain must not start or end with a hyphen.")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except UnicodeError as exc:  # idna.IDNAError and punycode failures
                raise InvalidEmail(
                    f"The domain has an invalid internationalised part: {exc}."
                ) from exc
    if labels[-1].isdigit():
        # RFC 3696 2: a top-level domain is never all-numeric; this also refuses bare IPs.
        raise InvalidEmail("Use a domain name after the @, not an IP address.")
