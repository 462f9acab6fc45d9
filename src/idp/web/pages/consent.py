"""The consent page, `/signin/consent`, for clients that are not first-party (issue 3
point 4): the person allows the app to use the listed details, or cancels.

Allow sets `consented_at` and finishes. Cancel finishes the journey with stage `denied`
and no `consented_at`; `/authorize/resume` then answers the client with `access_denied`
(RFC 6749 4.1.2.1) instead of a code (docs/login-transaction.md).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response

from idp.accounts import audit
from idp.accounts.sessions import session_cookie_name
from idp.app import Services
from idp.web import threads
from idp.web.pages import handoff, rendering, transactions
from idp.web.pages.forms import BadForm, read_form
from idp.web.pages.limits import client_ip
from idp.web.pages.transactions import clock, page_url, see_other

router = APIRouter(include_in_schema=False)

HERE = frozenset({"consent"})
DENIED = "denied"

#: What each scope lets the app see, in plain words.
SCOPE_TEXT = {
    "openid": "that it is you (an identifier that never changes)",
    "email": "your email address",
    "profile": "your name",
    "offline_access": "your details while you are not using it",
}


@router.get("/signin/consent")
async def show_consent(request: Request) -> Response:
    """What the app asks to use, with Allow and Cancel."""
    services, tx = transactions.services_and_tx(request)
    return await threads.run(_show, request, services, tx, clock(request))


def _show(request: Request, services: Services, tx: str, now: dt.datetime) -> Response:
    with services.sessions.begin() as db:
        opened = rendering.guard_get(request, db, tx=tx, here=HERE, now=now)
        if isinstance(opened, Response):
            return opened
        row, client = opened.row, opened.client
        scopes = str((row.params or {}).get("scope") or "openid").split()
        return rendering.page(
            request,
            "consent.html",
            row=row,
            client=client,
            tx=tx,
            title=f"Allow {transactions.service_name(client) or 'this app'} to use your details?",
            error_key=transactions.take_error(row),
            uses=[SCOPE_TEXT[s] for s in dict.fromkeys(scopes) if s in SCOPE_TEXT],
        )


@router.post("/signin/consent")
async def submit_consent(request: Request) -> Response:
    """Record the person's choice and hand back to the protocol."""
    services, tx = transactions.services_and_tx(request)
    form = await read_form(request)
    cookie = request.cookies.get(session_cookie_name(services.settings))
    now, ip = clock(request), client_ip(request)
    return await threads.run(_submit, services, tx=tx, form=form, cookie=cookie, ip=ip, now=now)


def _submit(
    services: Services,
    *,
    tx: str,
    form: dict[str, str] | BadForm,
    cookie: str | None,
    ip: str | None,
    now: dt.datetime,
) -> Response:
    # The transaction's row is written once, at the end (`transactions.posting`).
    with transactions.posting(services) as db:
        opened = transactions.guard_post(db, tx=tx, form=form, here=HERE, now=now)
        if not isinstance(opened, transactions.Opened):
            return opened
        row = opened.row
        assert isinstance(form, dict)
        decision = form.get("decision")
        if decision not in ("allow", "deny"):
            row.error = "decision_missing"
            return see_other(page_url(tx, "/signin/consent"))
        if decision == "allow":
            row.consented_at = now
        audit.record(
            db,
            "consent.given" if decision == "allow" else "consent.refused",
            account_id=row.account_id,
            client_id=row.client_id,
            ip=ip,
        )
        response = handoff.complete(
            db, row, tx=tx, cookie_value=cookie, settings=services.settings, now=now, ip=ip
        )
        if decision == "deny" and row.completed_at is not None:
            row.stage = DENIED
        return response
