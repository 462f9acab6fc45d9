"""TOTP without a database: RFC 6238 vectors, seeds, key URI, QR code, encryption, input."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import zxingcpp
from PIL import Image, ImageDraw

from idp.accounts import totp
from idp.crypto import DecryptionError, Encryptor

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()

# --- RFC 6238 Appendix B, through the same helper verification uses ----------------------


@pytest.mark.parametrize(
    ("unix_time", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_appendix_b_sha1_vectors(unix_time: int, expected: str) -> None:
    at = dt.datetime.fromtimestamp(unix_time, dt.UTC)
    assert totp.code_at(RFC_SECRET, totp.time_step(at), digits=8) == expected
    # The six-digit code we accept is the last six digits of the same HOTP value.
    assert totp.code_at(RFC_SECRET, totp.time_step(at)) == expected[-6:]


def test_matching_step_accepts_the_rfc_code_at_its_time() -> None:
    at = dt.datetime.fromtimestamp(1111111109, dt.UTC)
    assert totp.matching_step(RFC_SECRET, "081804", now=at) == 1111111109 // 30


# --- seeds, key URI, QR --------------------------------------------------------------------


def test_new_secret_is_160_bits_base32_without_padding_and_unique() -> None:
    secrets_ = {totp.new_secret() for _ in range(200)}
    assert len(secrets_) == 200
    for secret in secrets_:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20


def test_provisioning_uri_label_prefix_equals_issuer_and_parameters() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, email="jo.bloggs@example.org", issuer="PharmOutcomes")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/PharmOutcomes:jo.bloggs@example.org"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["PharmOutcomes"]
    assert query["algorithm"] == ["SHA1"]
    assert query["digits"] == ["6"]
    assert query["period"] == ["30"]
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == secret
    assert parsed.issuer == "PharmOutcomes"
    assert parsed.name == "jo.bloggs@example.org"


def test_provisioning_uri_escapes_spaces_in_the_issuer() -> None:
    uri = totp.provisioning_uri("AAAA", email="a@example.org", issuer="Ocular Outcomes")
    assert uri.startswith("otpauth://totp/Ocular%20Outcomes:a@example.org?")
    assert "issuer=Ocular%20Outcomes" in uri


@pytest.mark.parametrize("issuer", ["", "Pharm:Outcomes"])
def test_provisioning_uri_refuses_an_ambiguous_issuer(issuer: str) -> None:
    with pytest.raises(ValueError, match="issuer"):
        totp.provisioning_uri("AAAA", email="a@example.org", issuer=issuer)


def test_grouped_key_groups_of_four() -> None:
    assert totp.grouped_key("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == (
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4567"
    )
    assert totp.grouped_key("ABCDEF") == "ABCD EF"


def _decode(image: Image.Image) -> str:
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1
    return str(results[0].text)


def _rasterise_path_svg(svg: str, *, scale: int = 8) -> Image.Image:
    """Draw the unit squares of qrcode's SVG path image (M x,y H V z) onto a bitmap."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))  # type: ignore[union-attr]
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y in re.findall(r"M(\d+),(\d+)H", svg):
        x0, y0 = int(x) * scale, int(y) * scale
        draw.rectangle([x0, y0, x0 + scale - 1, y0 + scale - 1], fill=0)
    return image


def test_qr_svg_is_self_contained_labelled_and_decodes_to_the_uri() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), email="a@example.org", issuer="PharmOutcomes")
    svg = totp.qr_svg(uri, label='Scan "me" <now>')
    assert svg.startswith("<svg ")
    assert 'role="img"' in svg
    assert 'aria-label="Scan &quot;me&quot; &lt;now&gt;"' in svg
    # No external resources and nothing a strict CSP would block.
    assert "<script" not in svg
    assert "href" not in svg
    assert "<image" not in svg
    assert re.findall(r"https?://[^\"']+", svg) == ["http://www.w3.org/2000/svg"]
    assert _decode(_rasterise_path_svg(svg)) == uri


def test_qr_png_decodes_to_the_uri() -> None:
    uri = totp.provisioning_uri(totp.new_secret(), email="b@example.org", issuer="Outcomes4Health")
    assert _decode(Image.open(io.BytesIO(totp.qr_png(uri)))) == uri


# --- encryption at rest --------------------------------------------------------------------


def test_secret_encryption_round_trips_and_is_bound_to_the_account() -> None:
    encryptor = Encryptor({"k1": b"k" * 32})
    secret = totp.new_secret()
    sealed = totp.encrypt_secret(encryptor, secret, account_id="acc-1")
    assert secret not in sealed
    assert sealed.startswith("k1.")
    assert totp.decrypt_secret(encryptor, sealed, account_id="acc-1") == secret
    with pytest.raises(DecryptionError):
        totp.decrypt_secret(encryptor, sealed, account_id="acc-2")


def test_secret_decrypts_after_key_rotation() -> None:
    old = Encryptor({"k1": b"a" * 32})
    sealed = totp.encrypt_secret(old, "JBSWY3DPEHPK3PXP", account_id="acc")
    rotated = Encryptor({"k2": b"b" * 32, "k1": b"a" * 32})
    assert totp.decrypt_secret(rotated, sealed, account_id="acc") == "JBSWY3DPEHPK3PXP"
    assert totp.encrypt_secret(rotated, "JBSWY3DPEHPK3PXP", account_id="acc").startswith("k2.")


# --- code normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123\t456\n", "123456"),
        ("12345", None),
        ("1234567", None),
        ("12345a", None),
        ("", None),
        ("١٢٣٤٥٦", None),  # Arabic-Indic digits are digits to Python, not to us
        ("\uff11\uff12\uff13\uff14\uff15\uff16", None),  # fullwidth digits
        ("123-456", None),
        ("1" * 10_000, None),
    ],
)
def test_normalise_code(raw: str, expected: str | None) -> None:
    assert totp.normalise_code(raw) == expected
