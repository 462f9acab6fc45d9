"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): end the provider's
session and, when the client asked for it with a registered URI, send the browser back.

Rules: `post_logout_redirect_uri` must exactly match one registered for the client named
by `id_token_hint` (or `client_id`), otherwise no redirect happens (section 3, RFC 9700
4.1); `state` is passed back unchanged. Without a valid `id_token_hint` for the signed-in
person, the person confirms first (section 2: the OP SHOULD ask), so a third-party page
cannot sign someone out silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from authlib.common.urls import add_params_to_uri
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from idp.accounts import audit
from idp.accounts.sessions import (
    clear_session_cookie,
    current_session,
    end_session,
    session_cookie_name,
)
from idp.models import Client
from idp.oauth import tokens
from idp.oauth.context import current_db
from idp.oauth.errors import InvalidRequestError, OAuth2Error, error_page

if TYPE_CHECKING:
    from idp.oauth.server import IdpAuthorizationServer, RequestData
    from idp.settings import Settings


@dataclass(frozen=True)
class LogoutOutcome:
    """What `/logout` answers: an error page, a confirmation, or done (with a redirect)."""

    ended: bool = False
    redirect_to: str | None = None
    confirm: dict[str, str] | None = None
    error: OAuth2Error | None = None


def _values(data: RequestData) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in [*data.query, *data.form]:
        values.setdefault(key, value)
    return values


def _same_origin_post(data: RequestData, issuer: str) -> bool:
    """A confirmation POST must come from our own page (CSRF, ASVS 3.5)."""
    if data.method != "POST":
        return False
    origin = data.headers.get("origin")
    if origin is None:
        return data.headers.get("sec-fetch-site", "same-origin") == "same-origin"
    parts = urlsplit(issuer)
    return origin == f"{parts.scheme}://{parts.netloc}"


def end_session_request(server: IdpAuthorizationServer, data: RequestData) -> LogoutOutcome:
    """Decide and, when allowed, end the browser's session (runs in a worker thread)."""
    db, now, settings = current_db(), server.now(), server.settings
    values = _values(data)
    hint_sub: str | None = None
    client_id = values.get("client_id") or None
    if hint := values.get("id_token_hint"):
        try:
            claims = tokens.verify_id_token_hint(
                hint, keys=server.keys, issuer=settings.issuer, now=now
            )
        except tokens.TokenInvalidError:
            return LogoutOutcome(error=InvalidRequestError("The id_token_hint is not valid."))
        hint_sub = str(claims.get("sub"))
        aud = claims.get("aud")
        hint_client = aud if isinstance(aud, str) else (aud or [None])[0]
        if client_id and client_id != hint_client:
            return LogoutOutcome(error=InvalidRequestError("client_id does not match the hint."))
        client_id = hint_client
    redirect_to: str | None = None
    if uri := values.get("post_logout_redirect_uri"):
        client = db.get(Client, client_id) if client_id else None
        if client is None or uri not in client.post_logout_redirect_uris:
            return LogoutOutcome(
                error=InvalidRequestError("The post_logout_redirect_uri is not registered.")
            )
        state = values.get("state")
        redirect_to = add_params_to_uri(uri, [("state", state)]) if state else uri
    session = current_session(
        db, cookie_value=data.cookies.get(session_cookie_name(settings)), settings=settings, now=now
    )
    confirmed = values.get("confirm") == "yes" and _same_origin_post(data, settings.issuer)
    hinted_person = session is not None and hint_sub == session.account_id
    if session is not None and not (hinted_person or confirmed):
        keep = {k: v for k, v in values.items() if k != "confirm"}
        return LogoutOutcome(confirm=keep)
    if session is not None:
        end_session(db, session=session, now=now)
        audit.record(db, "session.logout", account_id=session.account_id, client_id=client_id)
    return LogoutOutcome(ended=True, redirect_to=redirect_to)


def to_response(request: Request, outcome: LogoutOutcome, *, settings: Settings) -> Response:
    """Render a logout outcome; clears the session cookie once the session has ended."""
    from idp.web.templating import render

    if outcome.error is not None:
        return error_page(
            request,
            title="There is a problem with this sign-out link",
            message=str(outcome.error.description),
        )
    if outcome.confirm is not None:
        return render(
            request,
            "oauth/logout_confirm.html",
            {"title": "Do you want to sign out?", "fields": sorted(outcome.confirm.items())},
            # The confirmation's POST ends in a redirect to the app (CSP form-action).
            form_action=[u for u in [outcome.confirm.get("post_logout_redirect_uri")] if u],
        )
    response: Response
    if outcome.redirect_to:
        response = RedirectResponse(outcome.redirect_to, status_code=303)
    else:
        response = render(request, "oauth/logged_out.html", {"title": "You have signed out"})
    response.headers["Cache-Control"] = "no-store"
    clear_session_cookie(response, settings=settings)
    return response
