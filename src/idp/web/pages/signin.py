"""The email-address-and-password page, `/signin?tx=...` (docs/login-transaction.md).

No enumeration (ASVS 6.3.8): an unknown address and a wrong password get the same message
after the same argon2 work (`verify_dummy`). Only after a correct password does a person
learn that their account is switched off or has no address of its own (the seed
announcement: shared addresses can no longer sign in). The failure budget is checked
before any verification (NIST 800-63B 5.2.2) and counts per account and per client IP.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.orm import Session

from idp.accounts import audit
from idp.accounts.emails import InvalidEmail, parse_email
from idp.accounts.passwords import hash_password, needs_rehash, verify_dummy, verify_password
from idp.app import Services
from idp.models import Account, LoginTransaction, TotpCredential
from idp.web import threads
from idp.web.pages import journey, rendering, transactions
from idp.web.pages.forms import BadForm, read_form
from idp.web.pages.limits import (
    PASSWORD,
    client_ip,
    refusal,
    throttle_for,
    throttle_subject,
)
from idp.web.pages.transactions import clock, page_url, see_other

router = APIRouter(include_in_schema=False)

#: RFC 5321 4.5.3.1.3: no longer address can be delivered to, so none can be an account.
MAX_EMAIL_LENGTH = 320
#: Accounts sharing one legacy address are few; this bounds the hashing work regardless.
MAX_LEGACY_CANDIDATES = 5
#: The stage this page serves.
_HERE = frozenset({"password"})


@router.get("/signin")
async def show_signin(request: Request) -> Response:
    """The email address and password form."""
    services, tx = transactions.services_and_tx(request)
    now = clock(request)
    opened = await transactions.usable_on_loop(
        services, tx=tx, here=_HERE, now=now, enrolment=False
    )
    if opened is not None:  # the usual case: read on the event loop, nothing to write
        return _signin_page(request, opened, tx=tx, error=None)
    return await threads.run(_show, request, services, tx, now)


def _show(request: Request, services: Services, tx: str, now: dt.datetime) -> Response:
    # Usually nothing is written: read in a read-only session (on PostgreSQL one
    # autocommit round trip, no BEGIN and COMMIT). A stored message must be cleared as it
    # is shown, so that case reads again in a writing transaction.
    with services.read_sessions.begin() as db:
        opened = rendering.guard_get(request, db, tx=tx, here=_HERE, now=now)
        if isinstance(opened, Response):
            return opened
        if opened.row.error is None:
            return _signin_page(request, opened, tx=tx, error=None)
    with services.sessions.begin() as db:
        opened = rendering.guard_get(request, db, tx=tx, here=_HERE, now=now)
        if isinstance(opened, Response):
            return opened
        error = transactions.take_error(opened.row)
        return _signin_page(request, opened, tx=tx, error=error)


def _signin_page(
    request: Request, opened: transactions.Opened, *, tx: str, error: str | None
) -> Response:
    row = opened.row
    hint = str((row.params or {}).get("login_hint") or "")
    return rendering.page(
        request,
        "signin.html",
        row=row,
        client=opened.client,
        tx=tx,
        title="Sign in",
        error_key=error,
        email=row.entered_email or hint[:MAX_EMAIL_LENGTH],
    )


@router.post("/signin")
async def submit_signin(request: Request) -> Response:
    """Check the email address and password; 303 to the next stage or back with a message."""
    services, tx = transactions.services_and_tx(request)
    form = await read_form(request)
    now, ip = clock(request), client_ip(request)
    return await threads.run(_submit, services, tx=tx, form=form, ip=ip, now=now)


def _submit(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    # The transaction's row is written once, at the end (`transactions.posting`).
    with transactions.posting(services) as db:
        opened = transactions.guard_post(db, tx=tx, form=form, here=_HERE, now=now)
        if not isinstance(opened, transactions.Opened):
            return opened
        row = opened.row
        assert isinstance(form, dict)
        outcome = _check(db, services, row, form=form, ip=ip, now=now)
        if isinstance(outcome, str):
            row.error = outcome
            return see_other(page_url(tx, "/signin"))
        account, has_authenticator = outcome
        journey.password_passed(row, account_id=account.id, now=now)
        row.stage = journey.stage_after_password(
            row, has_authenticator=has_authenticator, settings=services.settings, now=now
        )
        audit.record(
            db, "signin.password_ok", account_id=account.id, client_id=row.client_id, ip=ip
        )
        return see_other(page_url(tx, transactions.STAGE_PATHS[row.stage]))


def _check(
    db: Session,
    services: Services,
    row: LoginTransaction,
    *,
    form: dict[str, str],
    ip: str | None,
    now: dt.datetime,
) -> tuple[Account, bool] | str:
    """The account whose password was given and whether it has an authenticator, or the
    key of the message to show."""
    email = form.get("email", "").strip()
    password = form.get("password", "")
    row.entered_email = email[:MAX_EMAIL_LENGTH] or None
    if not email:
        return "email_missing"
    if not password:
        return "password_missing"
    account, has_authenticator = (
        _find_account(db, email=email) if len(email) <= MAX_EMAIL_LENGTH else (None, False)
    )
    throttle = throttle_for(services)
    account_id = account.id if account else None
    subject = throttle_subject(services, account_id=account_id, email=email)
    verdict = throttle.check(kind=PASSWORD, account_id=subject, ip=ip, now=now)
    if not verdict.allowed:
        # Refused before verifying anything, so guessing cannot go on while blocked.
        audit.record(db, "signin.throttled", account_id=account_id, ip=ip, kind=PASSWORD)
        return refusal(verdict)
    if account is None or account.password_hash is None:
        if _legacy_password_matches(db, email=email, password=password):
            return "legacy_email"
        verify_dummy(password)  # ASVS 6.3.8: the same work as a real check
        return _failed(db, services, subject=subject, ip=ip, now=now, client=row.client_id)
    if not verify_password(account.password_hash, password):
        return _failed(db, services, subject=subject, ip=ip, now=now, client=row.client_id)
    if account.disabled or account.email is None:
        audit.record(db, "signin.refused", account_id=account.id, ip=ip, reason="disabled")
        return "disabled" if account.disabled else "legacy_email"
    if verdict.resettable:
        throttle.record_success(kind=PASSWORD, account_id=account.id, ip=ip, now=now)
    if needs_rehash(account.password_hash):
        # Older hashes are upgraded at the next successful sign-in (OWASP password storage).
        account.password_hash = hash_password(password)
    return account, has_authenticator


#: Built once, so its compilation cache key is too.
_ACCOUNT_BY_EMAIL_KEY = select(
    Account, exists().where(TotpCredential.account_id == Account.id)
).where(Account.email_key == bindparam("email_key"))


def _find_account(db: Session, *, email: str) -> tuple[Account | None, bool]:
    """The account whose address matches `email` in any case or Unicode form (as
    `idp.admin.users.find_by_email`), and whether it has an authenticator: one statement."""
    try:
        key = parse_email(email).key
    except InvalidEmail:
        return None, False
    found = db.execute(_ACCOUNT_BY_EMAIL_KEY, {"email_key": key}).one_or_none()
    if found is None:
        return None, False
    return found[0], bool(found[1])


def _failed(
    db: Session,
    services: Services,
    *,
    subject: str,
    ip: str | None,
    now: dt.datetime,
    client: str,
) -> str:
    throttle_for(services).record_failure(kind=PASSWORD, account_id=subject, ip=ip, now=now)
    account_id = None if subject.startswith("unknown:") else subject
    audit.record(db, "signin.password_failed", account_id=account_id, client_id=client, ip=ip)
    return "credentials"


def _legacy_password_matches(db: Session, *, email: str, password: str) -> bool:
    """True if `password` is right for an account that only has a shared legacy address.

    Such accounts cannot sign in until given an address of their own; saying so only after
    a correct password keeps their existence from anyone who does not know the password.
    """
    candidates = db.scalars(
        select(Account.password_hash)
        .where(
            Account.email_key.is_(None),
            Account.password_hash.is_not(None),
            func.lower(Account.legacy_email) == email.lower(),
        )
        .limit(MAX_LEGACY_CANDIDATES)
    ).all()
    return any(verify_password(h, password) for h in candidates if h)
