"""What comes next in a sign-in journey, as small named decisions, and how it finishes.

After the password: the code page (authenticator set up), the setup page (none yet, MFA
mandatory or asked for by the client), or an optional setup the person may skip (before
`IDP_MFA_REQUIRED_FROM`). After the second factor (or a skip): consent for clients that are
not first-party, else done. Done starts a new browser session (ASVS 7.2.4: a new session
id at sign-in and at step-up, replacing any old one), records `amr`, `acr` and
`auth_time` on the transaction and hands back to `/authorize/resume`
(docs/login-transaction.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from idp.accounts import mfa_policy
from idp.accounts.sessions import current_session, start_session
from idp.models import BrowserSession, LoginTransaction
from idp.oauth.acr import ACR_MFA, ACR_SFA, AMR_OTP, AMR_PASSWORD, acr_for, amr_with
from idp.settings import Settings
from idp.web.pages.transactions import ClientLike

DONE = "done"


def client_requires_mfa(row: LoginTransaction) -> bool:
    """True when the client asked only for ACR values that need a second factor.

    RFC 9470 / OIDC Core 3.1.2.1 `acr_values`: if the password-only level is not among the
    requested values, skipping setup would leave the request unmet.
    """
    requested = str((row.params or {}).get("acr_values") or "").split()
    return bool(requested) and ACR_SFA not in requested and ACR_MFA in requested


def stage_after_password(
    row: LoginTransaction, *, has_authenticator: bool, settings: Settings, now: dt.datetime
) -> str:
    """`mfa`, `mfa_setup` or `mfa_setup_optional` for the person who gave the password."""
    stage = mfa_policy.stage_after_password(
        today=now.date(),
        required_from=settings.mfa_required_from,
        has_authenticator=has_authenticator,
    )
    if stage == "mfa_setup_optional" and client_requires_mfa(row):
        return "mfa_setup"
    return stage


def may_skip_setup(row: LoginTransaction, *, settings: Settings, now: dt.datetime) -> bool:
    """Whether the setup page offers "Skip for now": only before MFA is mandatory."""
    return (
        row.stage == "mfa_setup_optional"
        and not mfa_policy.mfa_required(today=now.date(), required_from=settings.mfa_required_from)
        and not client_requires_mfa(row)
    )


def needs_consent(row: LoginTransaction, client: ClientLike) -> bool:
    """Consent is asked for clients that are not first-party and for `prompt=consent`
    (OIDC Core 3.1.2.1), once per journey."""
    prompts = str((row.params or {}).get("prompt") or "").split()
    return (not client.first_party or "consent" in prompts) and row.consented_at is None


def stage_after_second_factor(row: LoginTransaction, client: ClientLike) -> str:
    """`consent` or done, once the person has passed (or skipped) the second factor."""
    return "consent" if needs_consent(row, client) else DONE


def password_passed(row: LoginTransaction, *, account_id: str, now: dt.datetime) -> None:
    """Record a correct password: a fresh `amr` of `pwd`, `auth_time` now, and no
    message of an earlier attempt left to show on the next page."""
    row.account_id = account_id
    row.amr = [AMR_PASSWORD]
    row.auth_time = now
    row.entered_email = None
    row.pending_totp_encrypted = None
    row.error = None


@dataclass(frozen=True)
class Finished:
    """A finished journey: the cookie value of the new browser session."""

    cookie_value: str
    session: BrowserSession


def code_passed(
    db: Session,
    row: LoginTransaction,
    *,
    cookie_value: str | None,
    settings: Settings,
    now: dt.datetime,
) -> bool:
    """Record a correct code. For a step-up (no password in this journey) the password
    part comes from the browser's live session of the same account; False if there is
    none, and the person must give the password again."""
    if AMR_PASSWORD not in row.amr:
        old = current_session(db, cookie_value=cookie_value, settings=settings, now=now)
        if old is None or old.account_id != row.account_id:
            return False
        row.amr = list(old.amr)
        row.auth_time = old.auth_time
    otp_passed(row)
    return True


def otp_passed(row: LoginTransaction) -> None:
    """Record a correct code on a journey that holds the password (`amr` has `pwd`)."""
    row.amr = amr_with(row.amr, AMR_OTP)
    row.pending_totp_encrypted = None


def finish(
    db: Session,
    row: LoginTransaction,
    *,
    cookie_value: str | None,
    settings: Settings,
    now: dt.datetime,
) -> Finished | None:
    """Start the new session (ending the browser's old one) and complete the transaction.

    A journey that proved nothing itself (only consent was missing) carries the `amr` and
    `auth_time` of the browser's live session of the same account; None if there is none,
    and the person must sign in again.
    """
    assert row.account_id is not None
    old = current_session(db, cookie_value=cookie_value, settings=settings, now=now)
    if not row.amr:
        if old is None or old.account_id != row.account_id:
            return None
        row.amr, row.auth_time = list(old.amr), old.auth_time
    # Set before the session starts: ending a replaced session flushes, and the
    # transaction is then updated in that flush (one UPDATE), not again at commit.
    mark_completed(row, now=now)
    assert row.auth_time is not None
    assert row.acr is not None
    session, new_cookie = start_session(
        db,
        account_id=row.account_id,
        auth_time=row.auth_time,
        amr=list(row.amr),
        acr=row.acr,
        settings=settings,
        now=now,
        replacing=old,
    )
    return Finished(cookie_value=new_cookie, session=session)


def mark_completed(row: LoginTransaction, *, now: dt.datetime) -> None:
    """Complete the transaction of a journey that proved what it needed: `acr` from its
    `amr`, `auth_time` (now, if it proved nothing new), done, for `/authorize/resume`."""
    row.acr = acr_for(row.amr)
    row.auth_time = row.auth_time or now
    row.completed_at = now
    row.stage = DONE
    row.error = None


#: The audit event of a finished sign-in (`completed_event`).
COMPLETED = "signin.completed"


def completed_event(row: LoginTransaction, *, ip: str | None) -> dict[str, Any]:
    """The fields of the `COMPLETED` audit event for `row`, finished: who, for which
    client, from where, and how they authenticated."""
    return {
        "account_id": row.account_id,
        "client_id": row.client_id,
        "ip": ip,
        "amr": list(row.amr),
        "acr": row.acr,
    }
