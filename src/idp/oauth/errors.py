"""Protocol errors beyond Authlib's, and the one place that turns any of them into a
response: a redirect to the client, RFC 6749 JSON, or an HTML page for a browser.

Authlib has one class per RFC 6749 / OIDC error code (`InvalidRequestError`,
`LoginRequiredError`, ...); the classes here add the codes it lacks. Every error carries
a client-safe `description`; internal detail goes to the log, never to the client.
`allow_redirect = False` marks errors that must never send the browser to a redirect URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core.errors import (
    InteractionRequiredError,
    LoginRequiredError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "InteractionRequiredError",
    "InvalidRequestError",
    "InvalidTokenError",
    "LoginRequiredError",
    "LoginTransactionError",
    "OAuth2Error",
    "RequestNotSupportedError",
    "RequestURINotSupportedError",
    "UnmetAuthenticationRequirementsError",
    "error_page",
    "json_error",
]


class UnmetAuthenticationRequirementsError(OAuth2Error):  # type: ignore[misc]
    """The requested `acr_values` cannot be met (OpenID Connect Unmet Authentication
    Requirements 1.0; RFC 9470 section 3: never pretend a weaker level is enough)."""

    error = "unmet_authentication_requirements"


class InvalidTokenError(OAuth2Error):  # type: ignore[misc]
    """The bearer token is missing, malformed, expired or revoked (RFC 6750 3.1)."""

    error = "invalid_token"
    status_code = 401

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        # RFC 6750 3: every 401 names the scheme and the error.
        headers.append(("WWW-Authenticate", f'Bearer error="{self.error}"'))
        return headers


class MissingTokenError(InvalidTokenError):
    """No bearer token at all: RFC 6750 3.1 says the challenge then carries no error code."""

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = OAuth2Error.get_headers(self)
        headers.append(("WWW-Authenticate", "Bearer"))
        return headers


class InsufficientScopeError(OAuth2Error):  # type: ignore[misc]
    """The token lacks the scope the resource needs (RFC 6750 3.1)."""

    error = "insufficient_scope"
    status_code = 403

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        headers.append(("WWW-Authenticate", f'Bearer error="{self.error}"'))
        return headers


class LoginTransactionError(OAuth2Error):  # type: ignore[misc]
    """A sign-in journey that cannot be resumed (expired, used, or another browser's).
    Shown as a page with "Start again"; never redirected (the request may be forged)."""

    error = "invalid_request"
    allow_redirect = False

    def __init__(self, description: str, *, start_again: str | None = None) -> None:
        super().__init__(description=description)
        self.start_again = start_again


def may_redirect(error: OAuth2Error) -> bool:
    """True when the error goes back to the client: Authlib sets `redirect_uri` only once
    the client and its exact redirect URI are validated (RFC 6749 4.1.2.1, RFC 9700 4.1)."""
    return bool(error.redirect_uri) and getattr(error, "allow_redirect", True)


def json_error(error: OAuth2Error) -> Response:
    """RFC 6749 5.2 JSON: `error`, `error_description`, with the error's status and
    headers (e.g. WWW-Authenticate on 401), never cached."""
    status, body, headers = error()
    response = JSONResponse(body, status_code=status)
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(
    request: Request,
    *,
    title: str,
    message: str,
    status_code: int = 400,
    start_again: str | None = None,
) -> Response:
    """The HTML error page shown to a person (never a redirect)."""
    from idp.web.templating import render

    context: dict[str, Any] = {"title": title, "message": message}
    if start_again:
        context["start_again_url"] = start_again
    return render(request, "error.html", context, status_code=status_code)


def wants_html(request: Request) -> bool:
    """Browsers ask for HTML; API clients for JSON (or anything)."""
    return "text/html" in request.headers.get("accept", "")


def browser_or_client_error(request: Request, error: OAuth2Error) -> Response:
    """The one handler for errors that cannot redirect: a page for a person, RFC 6749
    JSON for a program."""
    if wants_html(request):
        return error_page(
            request,
            title="There is a problem with this sign-in link",
            message=str(error.description or error.error),
            status_code=int(error.status_code),
            start_again=getattr(error, "start_again", None),
        )
    return json_error(error)


def error_params(error: OAuth2Error, *, state: str | None) -> Sequence[tuple[str, str]]:
    """The parameters of an authorization error response (RFC 6749 4.1.2.1)."""
    params = [("error", str(error.error))]
    if error.description:
        params.append(("error_description", str(error.description)))
    if state:
        params.append(("state", state))
    return params
