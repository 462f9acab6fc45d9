"""The email-address-and-password page, `/signin?tx=...` (docs/login-transaction.md).

No enumeration (ASVS 6.3.8): an unknown address and a wrong password get the same message
after the same argon2 work (`password_check.verify`). Only after a correct password does a
person learn that their account is switched off or has no address of its own (the seed
announcement: shared addresses can no longer sign in). The failure budget is checked
before any verification (NIST 800-63B 5.2.2) and counts per account and per client IP.

The POST is read on the event loop and the usual right password written there too
(`password_on_loop`); anything else (and, on SQLite, a POST that finds the write lock
held elsewhere) is answered here, in a worker thread, with the attempt verified once on
whichever path it took. Neither path holds a lock or a transaction across the hash: the
attempt is read, hashed, then written if the journey is still where it was.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from idp.accounts import audit
from idp.accounts.passwords import needs_rehash
from idp.accounts.throttle import Verdict
from idp.app import Services
from idp.models import Account, LoginTransaction
from idp.web import threads
from idp.web.pages import journey, password_on_loop, rendering, transactions
from idp.web.pages.forms import BadForm, read_form
from idp.web.pages.limits import (
    PASSWORD,
    client_ip,
    refusal,
    throttle_for,
    throttle_subject,
)
from idp.web.pages.password_check import (
    MAX_EMAIL_LENGTH,
    Attempt,
    Verified,
    find_account,
    legacy_hashes,
    rehash,
    verify,
)
from idp.web.pages.transactions import clock, page_url, see_other

router = APIRouter(include_in_schema=False)

#: The stage this page serves.
_HERE = password_on_loop.HERE
#: The audit event of a correct password.
PASSWORD_OK = password_on_loop.PASSWORD_OK


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
    # Read and (for the usual right password) written on the event loop, only the hash in
    # a worker thread.
    checked = await password_on_loop.submit(services, tx=tx, form=form, ip=ip, now=now)
    if isinstance(checked, Response):
        return checked
    if checked is not None:  # verified already: the rest of its answer is the thread's
        attempt, verified = checked
        # The loop hands over only attempts whose budget had nothing to reset.
        return await threads.run(
            _conclude_verified, services, tx=tx, form=form, attempt=attempt,
            verified=verified, resettable=False, ip=ip, now=now,
        )  # fmt: skip
    return await threads.run(_submit, services, tx=tx, form=form, ip=ip, now=now)


def _submit(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    """Read the attempt without writing, hash it outside any transaction, then write what
    it came to (`_conclude_verified`), as the event loop does: no row lock,
    no SQLite write lock and no pooled connection is held across the hash, which would
    make every other sign-in step wait behind it. A POST refused before its hash (an
    unusable journey, a bad form, a budget that refuses) is answered in one writing
    transaction (`_in_one_transaction`), which checks it again."""
    read = _read_attempt(services, tx=tx, form=form, ip=ip, now=now)
    if read is None:
        return _in_one_transaction(services, tx=tx, form=form, ip=ip, now=now)
    attempt, legacy, resettable = read
    verified = verify(attempt.password_hash, legacy, attempt.password)
    return _conclude_verified(
        services, tx=tx, form=form, attempt=attempt, verified=verified,
        resettable=resettable, ip=ip, now=now,
    )  # fmt: skip


def _read_attempt(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    ip: str | None,
    now: dt.datetime,
) -> tuple[Attempt, list[str], bool] | None:
    """The attempt a POST makes, the legacy hashes to try for it and whether its budget
    has failures to reset, read in a read-only session; None for a POST to refuse
    before hashing. What this decides depends on the form, the journey and the budget,
    never on whether the address has an account."""
    if isinstance(form, BadForm):
        return None
    email = form.get("email", "").strip()
    password = form.get("password", "")
    if not email or not password:
        return None
    with services.read_sessions.begin() as db:
        loaded = transactions.load(db, tx=tx, now=now)
        row = loaded.row
        if (
            row is None
            or loaded.problem is not None
            or transactions.redirect_for_stage(row, tx, here=_HERE) is not None
            or not transactions.csrf_ok(row, form.get("csrf_token"))
        ):
            return None
        attempt, legacy, verdict = _attempt(
            db, services, email=email, password=password, client_id=row.client_id, ip=ip, now=now
        )
        return None if not verdict.allowed else (attempt, legacy, verdict.resettable)


def _attempt(
    db: Session,
    services: Services,
    *,
    email: str,
    password: str,
    client_id: str,
    ip: str | None,
    now: dt.datetime,
) -> tuple[Attempt, list[str], Verdict]:
    """The attempt with `email` and `password`, the legacy hashes to try for it (read
    only if its budget allows it), and its budget's verdict: what both threaded paths
    read before the hash."""
    account, has_authenticator = find_account(db, email=email)
    account_id = account.id if account else None
    subject = throttle_subject(services, account_id=account_id, email=email)
    verdict = throttle_for(services).check(kind=PASSWORD, account_id=subject, ip=ip, now=now)
    attempt = Attempt(email, password, account, has_authenticator, subject, client_id)
    read_legacy = verdict.allowed and attempt.password_hash is None
    return attempt, legacy_hashes(db, email=email) if read_legacy else [], verdict


def _in_one_transaction(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    """The whole POST in one writing transaction: for the refusals `_read_attempt` saw,
    answered with their message (and, should the journey or budget have changed since
    to allow the attempt, checked and hashed here, once)."""
    # The transaction's row is written once, at the end (`transactions.posting`).
    with transactions.posting(services) as db:
        opened = transactions.guard_post(db, tx=tx, form=form, here=_HERE, now=now)
        if not isinstance(opened, transactions.Opened):
            return opened
        assert isinstance(form, dict)
        outcome = _check(db, services, opened.row, form=form, ip=ip, now=now)
        return _answer(db, services, opened.row, outcome, tx=tx, ip=ip, now=now)


def _conclude_verified(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    attempt: Attempt,
    verified: Verified,
    resettable: bool,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    """The answer to an attempt read and verified already (by `_submit`, or on the event
    loop by `password_on_loop` when its outcome is not the usual right password): the
    journey moved on, a failure counted, a refusal explained, a hash upgraded. The
    journey is checked again, locked; nothing is hashed again."""
    with transactions.posting(services) as db:
        opened = transactions.guard_post(db, tx=tx, form=form, here=_HERE, now=now)
        if not isinstance(opened, transactions.Opened):
            # The journey moved on meanwhile (another tab); a wrong guess still counts.
            if verified is Verified.WRONG:
                _failed(db, services, attempt, ip=ip, now=now)
            return opened
        row = opened.row
        row.entered_email = attempt.email[:MAX_EMAIL_LENGTH]
        outcome = _conclude(
            db, services, row, attempt, verified, resettable=resettable, ip=ip, now=now
        )
        return _answer(db, services, row, outcome, tx=tx, ip=ip, now=now)


def _answer(
    db: Session,
    services: Services,
    row: LoginTransaction,
    outcome: tuple[Account, bool] | str,
    *,
    tx: str,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    """Back to the page with the message `outcome` names, or on to the next stage."""
    if isinstance(outcome, str):
        row.error = outcome
        return see_other(page_url(tx, "/signin"))
    account, has_authenticator = outcome
    journey.password_passed(row, account_id=account.id, now=now)
    row.stage = journey.stage_after_password(
        row, has_authenticator=has_authenticator, settings=services.settings, now=now
    )
    audit.record(db, PASSWORD_OK, account_id=account.id, client_id=row.client_id, ip=ip)
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
    attempt, legacy, verdict = _attempt(
        db, services, email=email, password=password, client_id=row.client_id, ip=ip, now=now
    )
    if not verdict.allowed:
        # Refused before verifying anything, so guessing cannot go on while blocked.
        account_id = attempt.account.id if attempt.account else None
        audit.record(db, "signin.throttled", account_id=account_id, ip=ip, kind=PASSWORD)
        return refusal(verdict)
    verified = verify(attempt.password_hash, legacy, password)
    return _conclude(
        db, services, row, attempt, verified, resettable=verdict.resettable, ip=ip, now=now
    )


def _conclude(
    db: Session,
    services: Services,
    row: LoginTransaction,
    attempt: Attempt,
    verified: Verified,
    *,
    resettable: bool,
    ip: str | None,
    now: dt.datetime,
) -> tuple[Account, bool] | str:
    """What a verified attempt comes to: the account and whether it has an
    authenticator, or the key of the message to show. Only after a correct password does
    a person learn that their account is switched off or has no address of its own."""
    account = attempt.account
    if verified is Verified.LEGACY:
        return "legacy_email"
    if verified is Verified.WRONG or account is None or account.password_hash is None:
        return _failed(db, services, attempt, ip=ip, now=now)
    if account.disabled or account.email is None:
        audit.record(db, "signin.refused", account_id=account.id, ip=ip, reason="disabled")
        return "disabled" if account.disabled else "legacy_email"
    if resettable:
        throttle_for(services).record_success(kind=PASSWORD, account_id=account.id, ip=ip, now=now)
    if needs_rehash(account.password_hash):
        rehash(db, account, attempt.password)
    return account, attempt.has_authenticator


def _failed(
    db: Session,
    services: Services,
    attempt: Attempt,
    *,
    ip: str | None,
    now: dt.datetime,
) -> str:
    subject = attempt.subject
    throttle_for(services).record_failure(kind=PASSWORD, account_id=subject, ip=ip, now=now)
    account_id = None if subject.startswith("unknown:") else subject
    audit.record(
        db, "signin.password_failed", account_id=account_id, client_id=attempt.client_id, ip=ip
    )
    return "credentials"
