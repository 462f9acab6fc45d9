"""Email parsing: display form, uniqueness key, and refusals with a reason."""

from __future__ import annotations

import pytest

from idp.accounts.emails import EmailAddress, InvalidEmail, parse_email


def test_display_is_trimmed_and_kept_as_typed_key_is_folded() -> None:
    parsed = parse_email("  Alice.Smith@Example.COM \t")
    assert parsed == EmailAddress(display="Alice.Smith@Example.COM", key="alice.smith@example.com")


@pytest.mark.parametrize(
    "variant",
    [
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        "Alice@Example.Com",
        " alice@example.com ",
        # Fullwidth forms (NFKC maps them to ASCII), including the at sign and the dot.
        "\uff41\uff4c\uff49\uff43\uff45\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",
        "\uff21\uff2c\uff29\uff23\uff25@example.com",  # fullwidth ALICE
        # An ideographic space around the address is trimmed too.
        "\u3000alice@example.com\u3000",
    ],
)
def test_case_and_unicode_variants_collide(variant: str) -> None:
    assert parse_email(variant).key == "alice@example.com"


def test_special_case_folding_collides() -> None:
    # Full case folding, not lower(): German sharp s, capital sharp s and SS agree...
    keys = {parse_email(a).key for a in ("straße@x.de", "STRASSE@x.de", "STRAẞE@x.de")}
    assert keys == {"strasse@x.de"}
    # ...and dotted capital I folds to i + combining dot, as its lower-case spelling does.
    assert parse_email("ALİCE@example.com").key == parse_email("ali\u0307ce@example.com").key
    assert parse_email("ALİCE@example.com").display == "ALİCE@example.com"
    # Greek final sigma and capital sigma fold alike.
    assert parse_email("ΟΔΟΣ@example.gr").key == parse_email("οδος@example.gr").key


def test_compatibility_ligature_collides() -> None:
    # U+FB01 LATIN SMALL LIGATURE FI is "fi" under NFKC.
    assert parse_email("\ufb01nn@example.com").key == "finn@example.com"


def test_internationalised_domain_is_stored_as_punycode() -> None:
    unicode_form = parse_email("user@Bücher.Example")
    ascii_form = parse_email("USER@xn--bcher-kva.example")
    assert unicode_form.key == ascii_form.key == "user@xn--bcher-kva.example"
    assert unicode_form.display == "user@Bücher.Example"
    assert parse_email("info@例え.テスト").key == "info@xn--r8jz45g.xn--zckzah"


def test_non_ascii_local_part_is_accepted() -> None:
    assert parse_email("Jürgen@example.de").key == "jürgen@example.de"


def test_plus_and_atext_symbols_are_accepted() -> None:
    assert parse_email("o'brien+idp@example.org").key == "o'brien+idp@example.org"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "Email address is empty."),
        ("   ", "Email address is empty."),
        ("alice.example.com", "must contain an @"),
        ("alice@@example.com", "only one @"),
        ("a@b@example.com", "only one @"),
        ("@example.com", "nothing before the @"),
        ("alice@", "no domain after the @"),
        ("al ice@example.com", "spaces or control characters"),
        ("alice@exa mple.com", "spaces or control characters"),
        ("alice\x00@example.com", "spaces or control characters"),
        ("al\u200bice@example.com", "spaces or control characters"),
        ("alice@localhost", "must contain a dot"),
        ("alice@example.com.", "must not end with a dot"),
        ("alice@example..com", "empty part"),
        ("alice@.example.com", "empty part"),
        ("alice@-example.com", "start or end with a hyphen"),
        ("alice@example-.com", "start or end with a hyphen"),
        ("alice@exa_mple.com", "must not contain '_'"),
        ("alice@[192.0.2.1]", "not an IP address"),
        ("alice@192.0.2.1", "not an IP address"),
        ("alice@xn--zz.com", "invalid internationalised part"),
        ("alice@exämple.c☃m", "not a valid internationalised name"),
        (".alice@example.com", "must not start or end with a dot"),
        ("alice.@example.com", "must not start or end with a dot"),
        ("al..ice@example.com", "two dots in a row"),
        ('"alice"@example.com', "must not contain '\"'"),
        ("ali(ce)@example.com", "must not contain '('"),
        ("a" * 65 + "@example.com", "before the @ is too long"),
        ("alice@" + ("a" * 64) + ".com", "at most 63 characters"),
        ("a@" + ".".join(["b" * 50] * 5) + ".com", "too long (at most 254"),
        ("a" * 2000 + "@example.com", "too long (at most 254"),
    ],
)
def test_malformed_addresses_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        parse_email(raw)
    assert reason in str(caught.value)


def test_exactly_254_characters_is_accepted() -> None:
    domain = ".".join(["d" * 61] * 3) + ".com"
    raw = "a" * (254 - len(domain) - 1) + "@" + domain
    assert len(raw) == 254
    assert parse_email(raw).display == raw


def test_non_text_is_refused() -> None:
    with pytest.raises(InvalidEmail, match="must be text"):
        parse_email(b"alice@example.com")  # type: ignore[arg-type]


def test_length_is_also_checked_with_the_domain_encoded_for_email() -> None:
    # Fifteen different CJK characters make a 49-character A-label: five of them and
    # a TLD are 252 octets on the wire although the typed address is 86 characters.
    label = "".join(chr(0x4E00 + i * 997) for i in range(15))
    domain = ".".join([label] * 5) + ".cn"
    assert len(parse_email("a@" + domain).display) < 100
    with pytest.raises(InvalidEmail, match="once its domain is encoded"):
        parse_email("ab@" + domain)
