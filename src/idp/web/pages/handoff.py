"""Moves a journey on after the second factor: to consent, or done and back to the protocol.

Done means a new browser session whose cookie is set on the 303 to `/authorize/resume`
(docs/login-transaction.md step 3), which issues the code.
"""

from __future__ import annotations

import datetime as dt

from fastapi.responses import Response
from sqlalchemy.orm import Session

from idp.accounts import audit
from idp.accounts.sessions import set_session_cookie
from idp.models import LoginTransaction
from idp.settings import Settings
from idp.web.pages import journey, transactions
from idp.web.pages.transactions import RESUME_PATH, ClientLike, page_url, see_other


def proceed(
    db: Session,
    row: LoginTransaction,
    *,
    client: ClientLike | None,
    tx: str,
    cookie_value: str | None,
    settings: Settings,
    now: dt.datetime,
    ip: str | None,
) -> Response:
    """303 to the consent page, or finish the journey and 303 to `/authorize/resume`."""
    if client is not None and journey.needs_consent(row, client):
        row.stage = "consent"
        return see_other(page_url(tx, transactions.STAGE_PATHS["consent"]))
    return complete(db, row, tx=tx, cookie_value=cookie_value, settings=settings, now=now, ip=ip)


def complete(
    db: Session,
    row: LoginTransaction,
    *,
    tx: str,
    cookie_value: str | None,
    settings: Settings,
    now: dt.datetime,
    ip: str | None,
) -> Response:
    """Finish the journey: new session cookie, completed transaction, 303 to resume."""
    finished = journey.finish(db, row, cookie_value=cookie_value, settings=settings, now=now)
    if finished is None:
        # The session that carried this journey ended meanwhile: sign in from the start.
        row.stage, row.account_id, row.amr, row.consented_at = "password", None, [], None
        return see_other(page_url(tx, transactions.STAGE_PATHS["password"]))
    audit.record(db, journey.COMPLETED, **journey.completed_event(row, ip=ip))
    response = see_other(page_url(tx, RESUME_PATH))
    set_session_cookie(response, value=finished.cookie_value, settings=settings)
    return response
