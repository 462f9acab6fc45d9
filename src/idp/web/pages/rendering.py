"""Renders the sign-in pages with what every one of them shows, and the problem pages.

Every page names the client's service (PharmOutcomes, Outcomes4Health, OcularOutcomes)
and the support contact (issue 4 point 7); forms carry the transaction's CSRF token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from idp.models import LoginTransaction
from idp.web.pages import transactions
from idp.web.pages.messages import lookup, summary
from idp.web.pages.transactions import ClientLike, Opened, Problem
from idp.web.security import csp_source_for
from idp.web.templating import DEFAULT_SERVICE_NAME, render

_PROBLEMS: dict[Problem, tuple[int, str, str]] = {
    Problem.UNKNOWN: (
        404,
        "This sign-in link does not work",
        "The link may be incomplete or from an old email or bookmark. Go back to the app "
        "you were using and sign in from there.",
    ),
    Problem.EXPIRED: (
        410,
        "Your sign-in timed out",
        "You did not finish signing in in time, so nothing was saved. Start again to sign in.",
    ),
    Problem.USED: (
        410,
        "You have already signed in",
        "This sign-in has been finished, so it cannot be used again. Start again if you "
        "need to sign in.",
    ),
}


def _service(client: ClientLike | None) -> str:
    return transactions.service_name(client) or DEFAULT_SERVICE_NAME


def page(
    request: Request,
    template: str,
    *,
    row: LoginTransaction,
    client: ClientLike | None,
    tx: str,
    title: str,
    error_key: str | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A journey page: its form posts back with `tx` and the CSRF token.

    Chromium applies the CSP `form-action` to the redirects after a POST, and a POST that
    finishes the journey ends at the client's redirect URI, so every journey page allows it.
    """
    redirect_uri = str(row.params.get("redirect_uri", "")) if row.params else ""
    try:
        form_action: tuple[str, ...] = (redirect_uri,) if csp_source_for(redirect_uri) else ()
    except ValueError:
        form_action = ()  # the protocol validated it; an odd one only loses the allowance
    errors = summary(error_key)
    message = lookup(error_key)
    field_errors = {message.field: message.text} if message and message.field else {}
    return render(
        request,
        template,
        {
            "title": title,
            "service_name": _service(client),
            "errors": errors,
            "field_errors": field_errors,
            "tx": tx,
            "csrf_token": row.csrf_token,
            **context,
        },
        status_code=status_code,
        form_action=form_action,
    )


def problem_page(
    request: Request, *, row: LoginTransaction | None, client: ClientLike | None, problem: Problem
) -> HTMLResponse:
    """Why this sign-in cannot go on, with "Start again" when the request is known."""
    status_code, title, message = _PROBLEMS[problem]
    return render(
        request,
        "signin_expired.html",
        {
            "title": title,
            "message": message,
            "service_name": _service(client),
            "start_again_url": transactions.restart_url(row),
        },
        status_code=status_code,
    )


def guard_get(
    request: Request,
    db: Session,
    *,
    tx: str,
    here: Collection[str],
    now: dt.datetime,
    enrolment: bool = False,
) -> Opened | Response:
    """The transaction a page may show, with its client (and with `enrolment` whether its
    account has an authenticator), all read in one statement; or the problem page for an
    unusable transaction, or the 303 to the page of the transaction's current stage."""
    loaded = transactions.load(db, tx=tx, now=now, enrolment=enrolment)
    row, problem = loaded.row, loaded.problem
    if row is None or problem is not None:
        return problem_page(
            request,
            row=row,
            client=loaded.client,
            problem=problem or transactions.Problem.UNKNOWN,
        )
    elsewhere = transactions.redirect_for_stage(row, tx, here=here)
    if elsewhere is not None:
        return transactions.see_other(elsewhere)
    return loaded.opened()
