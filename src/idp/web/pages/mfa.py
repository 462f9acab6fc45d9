"""The second-factor pages: authenticator setup (`/signin/setup`) and the security code
(`/signin/code`), plus "Skip for now" before MFA becomes mandatory.

Setup (issue 4 point 1): the seed is made when the page is first shown and kept, encrypted
and bound to this transaction, in `pending_totp_encrypted`, so a half-finished setup in
another tab (another transaction) cannot be confirmed here; nothing is enrolled until a
code from it is right (`totp.confirm_enrolment`). Codes are accepted once only (NIST
800-63B 5.1.4.2) and count against the code budget, apart from passwords.
"""

from __future__ import annotations

import base64
import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from idp.accounts import audit, totp
from idp.accounts.sessions import session_cookie_name
from idp.app import Services
from idp.models import Account, LoginTransaction
from idp.web import threads
from idp.web.pages import code_on_loop, handoff, journey, rendering, transactions
from idp.web.pages.forms import BadForm, read_form
from idp.web.pages.limits import CODE, client_ip, refusal, throttle_for
from idp.web.pages.transactions import CODE_STAGES, SETUP_STAGES, clock, page_url, see_other

router = APIRouter(include_in_schema=False)


def _pending_context(row: LoginTransaction) -> bytes:
    # Associated data: the pending seed decrypts only for this transaction and account.
    return f"pending-totp:{row.id_hash}:{row.account_id}".encode()


def _pending_secret(row: LoginTransaction, services: Services, *, create: bool) -> str | None:
    """This transaction's pending seed, made (and stored encrypted) on first view."""
    if row.pending_totp_encrypted:
        raw = services.encryptor.decrypt(row.pending_totp_encrypted, context=_pending_context(row))
        return raw.decode("ascii")
    if not create:
        return None
    secret = totp.new_secret()
    row.pending_totp_encrypted = services.encryptor.encrypt(
        secret.encode("ascii"), context=_pending_context(row)
    )
    return secret


def _match_stage_to_authenticator(row: LoginTransaction, *, enrolled: bool) -> str | None:
    """Move a setup page to the code page once an authenticator exists (another tab
    finished setup), and a code page to setup when there is none (a step-up for someone
    who skipped setup, or support removed it); the new stage, or None if unchanged."""
    if enrolled and row.stage in SETUP_STAGES:
        row.stage, row.pending_totp_encrypted = "mfa", None
        return row.stage
    if not enrolled and row.stage in CODE_STAGES:
        row.stage = "mfa_setup"
        return row.stage
    return None


def _long_date(day: dt.date) -> str:
    return f"{day.day} {day:%B %Y}"


def _show(
    request: Request, services: Services, tx: str, here: frozenset[str], now: dt.datetime
) -> Response:
    if here is CODE_STAGES:
        # Usually nothing is written: read in a read-only session (on PostgreSQL one
        # autocommit round trip, no BEGIN and COMMIT). A message to clear or a stage to
        # move (no authenticator) reads again below, in a writing transaction.
        with services.read_sessions.begin() as db:
            opened = rendering.guard_get(request, db, tx=tx, here=here, now=now, enrolment=True)
            if isinstance(opened, Response):
                return opened
            if opened.enrolled and opened.row.error is None:
                return _code_page(request, opened, tx=tx, error=None)
    with services.sessions.begin() as db:
        opened = rendering.guard_get(request, db, tx=tx, here=here, now=now, enrolment=True)
        if isinstance(opened, Response):
            return opened
        row, client = opened.row, opened.client
        assert row.account_id is not None
        moved = _match_stage_to_authenticator(row, enrolled=bool(opened.enrolled))
        if moved is not None:
            return see_other(page_url(tx, transactions.STAGE_PATHS[moved]))
        error = transactions.take_error(row)
        service = transactions.service_name(client) or "PharmOutcomes"
        if here is CODE_STAGES:
            return _code_page(request, opened, tx=tx, error=error)
        account = db.get(Account, row.account_id)
        assert account is not None
        assert account.email is not None
        secret = _pending_secret(row, services, create=True)
        assert secret is not None
        uri = totp.provisioning_uri(secret, email=account.email, issuer=service)
        qr = base64.b64encode(totp.qr_svg(uri).encode("utf-8")).decode("ascii")
        return rendering.page(
            request,
            "mfa_setup.html",
            row=row,
            client=client,
            tx=tx,
            title="Set up an authenticator app",
            error_key=error,
            qr_data_uri=f"data:image/svg+xml;base64,{qr}",
            setup_key=secret,
            issuer=service,
            email=account.email,
            may_skip=journey.may_skip_setup(row, settings=services.settings, now=now),
            required_from=_long_date(services.settings.mfa_required_from),
        )


def _code_page(
    request: Request, opened: transactions.Opened, *, tx: str, error: str | None
) -> Response:
    return rendering.page(
        request,
        "mfa_code.html",
        row=opened.row,
        client=opened.client,
        tx=tx,
        title="Enter a security code",
        error_key=error,
    )


@router.get("/signin/setup")
async def show_setup(request: Request) -> Response:
    """The QR code, the typed key and the first security code."""
    services, tx = transactions.services_and_tx(request)
    return await threads.run(_show, request, services, tx, SETUP_STAGES, clock(request))


@router.get("/signin/code")
async def show_code(request: Request) -> Response:
    """The security code form."""
    services, tx = transactions.services_and_tx(request)
    now = clock(request)
    opened = await transactions.usable_on_loop(
        services, tx=tx, here=CODE_STAGES, now=now, enrolment=True
    )
    if opened is not None and opened.enrolled:  # the usual case: read on the event loop
        return _code_page(request, opened, tx=tx, error=None)
    return await threads.run(_show, request, services, tx, CODE_STAGES, now)


@router.post("/signin/setup")
async def submit_setup(request: Request) -> Response:
    """Confirm the pending seed with a first code."""
    services, tx = transactions.services_and_tx(request)
    return await _post(request, services, tx, SETUP_STAGES)


@router.post("/signin/code")
async def submit_code(request: Request) -> Response:
    """Check a security code."""
    services, tx = transactions.services_and_tx(request)
    return await _post(request, services, tx, CODE_STAGES)


@router.post("/signin/setup/skip")
async def skip_setup(request: Request) -> Response:
    """Skip setup for now (only before `IDP_MFA_REQUIRED_FROM`)."""
    services, tx = transactions.services_and_tx(request)
    return await _post(request, services, tx, frozenset({"mfa_setup_optional"}), skip=True)


async def _post(
    request: Request, services: Services, tx: str, here: frozenset[str], *, skip: bool = False
) -> Response:
    form = await read_form(request)
    cookie = request.cookies.get(session_cookie_name(services.settings))
    now, ip = clock(request), client_ip(request)
    if here is CODE_STAGES:  # the usual right code: on the event loop
        done = await code_on_loop.submit(services, tx=tx, form=form, cookie=cookie, ip=ip, now=now)
        if done is not None:
            return done
    return await threads.run(
        _submit, services, tx=tx, form=form, here=here, skip=skip, cookie=cookie, ip=ip, now=now
    )


def _submit(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    here: frozenset[str],
    skip: bool,
    cookie: str | None,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    settings = services.settings
    # The transaction's row is written once, at the end (`transactions.posting`).
    with transactions.posting(services) as db:
        opened = transactions.guard_post(
            db, tx=tx, form=form, here=here, now=now, credential=here is CODE_STAGES
        )
        if not isinstance(opened, transactions.Opened):
            return opened
        row = opened.row
        assert isinstance(form, dict)
        assert row.account_id is not None
        back = see_other(page_url(tx, transactions.STAGE_PATHS[row.stage]))
        if skip:
            if not journey.may_skip_setup(row, settings=settings, now=now):
                return back
            row.pending_totp_encrypted = None
            audit.record(db, "mfa.setup_skipped", account_id=row.account_id, ip=ip)
        else:
            error = _check_code(
                db,
                services,
                row,
                credential=opened.credential,
                code=form.get("code", ""),
                ip=ip,
                now=now,
            )
            if error is not None:
                row.error = error
                return see_other(page_url(tx, transactions.STAGE_PATHS[row.stage]))
            if not journey.code_passed(db, row, cookie_value=cookie, settings=settings, now=now):
                # A step-up whose password session ended meanwhile: the password again.
                row.stage, row.account_id, row.amr = "password", None, []
                return see_other(page_url(tx, "/signin"))
        return handoff.proceed(
            db,
            row,
            client=opened.client,
            tx=tx,
            cookie_value=cookie,
            settings=settings,
            now=now,
            ip=ip,
        )


def _check_code(
    db: Session,
    services: Services,
    row: LoginTransaction,
    *,
    credential: transactions.Authenticator | None,
    code: str,
    ip: str | None,
    now: dt.datetime,
) -> str | None:
    """None if the code is right (and now spent), else the key of the message to show.

    `credential` is the account's authenticator as read with the transaction (code page).
    """
    assert row.account_id is not None
    if not code.strip():
        return "code_missing"
    if totp.normalise_code(code) is None:
        # Not six digits: cannot be a guess at a real code, so no budget is spent.
        return "code_format"
    throttle = throttle_for(services)
    verdict = throttle.check(kind=CODE, account_id=row.account_id, ip=ip, now=now)
    if not verdict.allowed:
        audit.record(db, "signin.throttled", account_id=row.account_id, ip=ip, kind=CODE)
        return refusal(verdict)
    if row.stage in SETUP_STAGES:
        ok, wrong = _confirm_setup(db, services, row, code=code, now=now), "setup_code_wrong"
    else:
        if credential is None:
            # Support removed the authenticator meanwhile: set up a new one.
            row.stage = "mfa_setup"
            return "authenticator_removed"
        ok = totp.verify_code(
            db, credential=credential, code=code, encryptor=services.encryptor, now=now
        )
        wrong = "code_wrong"
    if ok is None:
        return "already_enrolled"
    if not ok:
        throttle.record_failure(kind=CODE, account_id=row.account_id, ip=ip, now=now)
        audit.record(db, "signin.code_failed", account_id=row.account_id, ip=ip)
        return wrong
    if verdict.resettable:  # else no counter of this account to reset
        throttle.record_success(kind=CODE, account_id=row.account_id, ip=ip, now=now)
    return None


def _confirm_setup(
    db: Session, services: Services, row: LoginTransaction, *, code: str, now: dt.datetime
) -> bool | None:
    """True once enrolled with this transaction's seed, False for a wrong code, None when
    another tab enrolled first (the stage then moves to the code page)."""
    assert row.account_id is not None
    secret = _pending_secret(row, services, create=False)
    if secret is None:
        return False
    try:
        credential = totp.confirm_enrolment(
            db,
            account_id=row.account_id,
            secret=secret,
            code=code,
            encryptor=services.encryptor,
            now=now,
        )
    except totp.AlreadyEnrolled:
        row.stage, row.pending_totp_encrypted = "mfa", None
        return None
    return credential is not None
