"""Authenticator-app codes (RFC 6238 TOTP via pyotp): seeds, enrolment and verification.

Parameters are the ones every authenticator app honours: HMAC-SHA1, 6 digits, 30 s steps
(NIST 800-63B 5.1.4.1). Seeds are 160 bits from a CSPRNG (RFC 4226 section 4 R6) and
stored AES-GCM encrypted, bound to the account id (`idp.crypto.Encryptor`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import re
import secrets
from typing import Any, cast
from urllib.parse import quote, urlencode

import pyotp
from sqlalchemy import Dialect, Table, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idp.accounts import audit
from idp.accounts.revocation import revoke_account_access
from idp.crypto import Encryptor
from idp.db import driver_sql
from idp.models import Account, TotpCredential

STEP_SECONDS = 30
DIGITS = 6
#: RFC 6238 section 5.2: accept at most one step of drift either way.
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits, NIST 800-63B 5.1.4.1 / RFC 4226 R6

_CODE = re.compile(r"[0-9]{6}")
_WHITESPACE = re.compile(r"\s+")


class AlreadyEnrolled(Exception):  # noqa: N818 (name agreed with the hosted pages)
    """The account already has an authenticator; support must remove it first."""


def new_secret() -> str:
    """A fresh 160-bit seed from `secrets`, base32 without padding."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def provisioning_uri(secret: str, *, email: str, issuer: str) -> str:
    """The `otpauth://totp/ISSUER:EMAIL?secret=...&issuer=ISSUER` URI for a QR code.

    The label prefix equals the `issuer` parameter (Key URI Format), so apps file the entry
    under the service name whichever field they read. A colon in the issuer would make the
    label ambiguous, so it is refused.
    """
    if not issuer or ":" in issuer:
        raise ValueError("the issuer must be a non-empty service name without ':'")
    label = quote(f"{issuer}:{email}", safe="@:")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": str(DIGITS),
            "period": str(STEP_SECONDS),
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def grouped_key(secret: str) -> str:
    """The seed in groups of four (`ABCD EFGH ...`) for typing into a desktop app."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_svg(uri: str, *, label: str = "QR code for your authenticator app") -> str:
    """An inline SVG QR code of `uri`: no external resources, fits a strict CSP.

    It carries `role="img"` and an accessible name (WCAG 1.1.1); `label` must be plain
    text (it is escaped here).
    """
    from html import escape

    import qrcode
    from qrcode.image.svg import SvgPathImage

    image = qrcode.make(uri, image_factory=SvgPathImage, box_size=10, border=4)
    svg = str(image.to_string(encoding="unicode"))
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)


def qr_png(uri: str) -> bytes:
    """A PNG QR code of `uri` (for tests and `data:` fallbacks)."""
    import io

    import qrcode

    buffer = io.BytesIO()
    qrcode.make(uri, box_size=10, border=4).save(buffer, format="PNG")
    return buffer.getvalue()


def _context(account_id: str) -> bytes:
    # Associated data: a seed copied to another account's row fails authentication.
    return f"totp:{account_id}".encode()


def encrypt_secret(encryptor: Encryptor, secret: str, *, account_id: str) -> str:
    """Encrypt a seed for storage, bound to its account."""
    return encryptor.encrypt(secret.encode("ascii"), context=_context(account_id))


def decrypt_secret(encryptor: Encryptor, token: str, *, account_id: str) -> str:
    """Decrypt a stored seed of `account_id`."""
    return encryptor.decrypt(token, context=_context(account_id)).decode("ascii")


def time_step(now: dt.datetime) -> int:
    """The RFC 6238 time step T = floor(unix time / 30) at `now`."""
    return int(now.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int, *, digits: int = DIGITS) -> str:
    """The code for `step` (RFC 6238 TOTP = RFC 4226 HOTP of the step counter)."""
    return str(pyotp.TOTP(secret, digits=digits, interval=STEP_SECONDS).generate_otp(step))


def normalise_code(code: str) -> str | None:
    """The code without spaces if it is exactly six ASCII digits, else None."""
    if len(code) > 32:  # bound the work on absurd input before the regex
        return None
    cleaned = _WHITESPACE.sub("", code)
    return cleaned if _CODE.fullmatch(cleaned) else None


def matching_step(secret: str, code: str, *, now: dt.datetime) -> int | None:
    """The step within one step of `now` whose code is `code`, or None.

    Every candidate is compared in constant time so timing does not reveal which step
    (if any) was close.
    """
    normalised = normalise_code(code)
    if normalised is None:
        return None
    current = time_step(now)
    found: int | None = None
    # RFC 6238 section 5.2 / NIST 800-63B 5.1.4.1: at most one step of drift each way.
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step).encode(), normalised.encode()):
            found = step
    return found


#: The single-use compare-and-set of `verify_code`, built once (its cache key with it).
_CREDENTIALS = cast(Table, TotpCredential.__table__)
_USE_STEP = (
    update(_CREDENTIALS)
    .where(
        _CREDENTIALS.c.id == bindparam("b_id"), _CREDENTIALS.c.last_used_step < bindparam("b_step")
    )
    .values(last_used_step=bindparam("b_step"))
)


def verify_code(
    db: Session,
    *,
    credential: TotpCredential,
    code: str,
    encryptor: Encryptor,
    now: dt.datetime,
) -> bool:
    """True if `code` is right and was never accepted before for this account.

    NIST 800-63B 5.1.4.2 / ASVS 6.5.1: a code is accepted once. The compare-and-set below
    moves `last_used_step` forward only if no request (in any process) has used this or a
    later step; the row lock makes a racing second request see the new value and match
    zero rows.
    """
    step = accepted_step(credential, code, encryptor=encryptor, now=now)
    if step is None:
        return False
    result = db.connection().execute(_USE_STEP, {"b_id": credential.id, "b_step": step})
    if getattr(result, "rowcount", 0) != 1:
        return False
    set_committed_value(credential, "last_used_step", step)
    return True


def accepted_step(
    credential: TotpCredential, code: str, *, encryptor: Encryptor, now: dt.datetime
) -> int | None:
    """The time step whose code `code` is for `credential`'s seed (within the drift
    allowed), or None; whether it was used already is the compare-and-set's to say
    (`verify_code`, `use_step_statement`)."""
    secret = decrypt_secret(
        encryptor, credential.secret_encrypted, account_id=credential.account_id
    )
    return matching_step(secret, code, now=now)


#: `_USE_STEP` returning the authenticator's id: a row only when the step was taken.
_USE_STEP_RETURNING = _USE_STEP.returning(_CREDENTIALS.c.id)


def use_step_statement(
    dialect: Dialect, credential: TotpCredential, step: int
) -> tuple[str, dict[str, Any]]:
    """`verify_code`'s compare-and-set as PostgreSQL driver SQL and parameters, for the
    security-code POST on the event loop (`idp.web.pages.code_on_loop`): it returns a
    row only if it moved `last_used_step` forward to `step`, which spends the code."""
    return driver_sql(dialect, _USE_STEP_RETURNING)[0], {"b_id": credential.id, "b_step": step}


def credential_for(db: Session, *, account_id: str) -> TotpCredential | None:
    """The account's confirmed authenticator, if any."""
    return db.scalars(
        select(TotpCredential).where(TotpCredential.account_id == account_id)
    ).one_or_none()


def confirm_enrolment(
    db: Session,
    *,
    account_id: str,
    secret: str,
    code: str,
    encryptor: Encryptor,
    now: dt.datetime,
) -> TotpCredential | None:
    """Enrol `secret` if `code` proves the person's app has it; None if the code is wrong.

    Nothing is stored until the code is right. The credential starts with
    `last_used_step` at the matched step, so the confirming code cannot sign in again.
    Raises `AlreadyEnrolled` if the account has an authenticator (also when another tab
    or process won a race: the unique `account_id` decides).
    """
    if credential_for(db, account_id=account_id) is not None:
        raise AlreadyEnrolled(account_id)
    step = matching_step(secret, code, now=now)
    if step is None:
        return None
    credential = TotpCredential(
        account_id=account_id,
        secret_encrypted=encrypt_secret(encryptor, secret, account_id=account_id),
        last_used_step=step,
        created_at=now,
    )
    try:
        with db.begin_nested():
            db.add(credential)
    except IntegrityError as exc:
        raise AlreadyEnrolled(account_id) from exc
    audit.record(db, "mfa.enrolled", account_id=account_id, method="totp")
    return credential


def reset_mfa(
    db: Session, *, account: Account, actor_id: str | None, reason: str, now: dt.datetime
) -> bool:
    """Support removes the authenticator; True if there was one.

    The person sets up a new one at the next sign-in. Every session and refresh token of
    the account ends too (STANDARDS: resetting MFA ends sessions and refresh tokens), since
    a reset often follows a lost or stolen phone.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("a reason is required to reset an authenticator")
    result = db.execute(
        delete(TotpCredential)
        .where(TotpCredential.account_id == account.id)
        .execution_options(synchronize_session="fetch")
    )
    removed = getattr(result, "rowcount", 0) == 1
    ended = revoke_account_access(db, account_id=account.id, now=now)
    audit.record(
        db,
        "mfa.reset",
        account_id=account.id,
        actor_id=actor_id,
        reason=reason[:500],
        removed=removed,
        sessions_ended=ended["sessions_ended"],
        sign_ins_expired=ended["sign_ins_expired"],
        grants_revoked=ended["grants_revoked"],
        refresh_tokens_revoked=ended["refresh_tokens_revoked"],
    )
    return removed
