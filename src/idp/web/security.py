"""Security headers on every response, as a pure ASGI middleware (issue 4 point 6).

Every response gets a strict `Content-Security-Policy` (no inline script or style,
`frame-ancestors 'none'`, RFC 9700 4.16), `Referrer-Policy: no-referrer` (codes and
transaction ids in URLs must not leak), `X-Content-Type-Options: nosniff`,
`X-Frame-Options: DENY` (older browsers), `Cross-Origin-Opener-Policy: same-origin`, and
HSTS when the issuer is https. HTML responses also get `Cache-Control: no-store`, so a
shared or back-button cache never shows a page with a CSRF token or personal details.

Cross-origin form targets: `form-action` is `'self'` plus whatever the route allowed with
`allow_form_action(request, uri, ...)`. Routes must allow the client's redirect URI on
(a) a `response_mode=form_post` page, which posts to the client, and (b) every hosted page
whose POST ends, through 303 redirects, at the client: Chromium applies `form-action` to
the whole redirect chain of a form submission. The origins travel in the request's
`scope["state"]` (what `request.state` writes to), which this middleware reads when the
response starts. Pure ASGI because `BaseHTTPMiddleware` adds a task and a copy per request.

`install(app)` puts the middleware outside Starlette's `ServerErrorMiddleware`, which
`add_middleware` cannot do, so a 500 page (ours or the default) gets the headers too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Key in `request.state` holding the extra form-action sources of one response.
FORM_ACTION_STATE_KEY = "csp_form_action"

BASE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS_VALUE = "max-age=31536000"

_HOST_ORIGIN = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_SCHEME_SOURCE = re.compile(r"^[a-z][a-z0-9+.-]*:$")


def csp_source_for(uri: str) -> str:
    """The CSP source expression that allows submitting to `uri`: its origin or scheme.

    Raises ValueError for anything that is not a plain absolute URI, so a source can never
    smuggle `;` or `'unsafe-inline'` into the policy.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"form-action target must not carry credentials: {uri!r}")
        origin = f"{scheme}://{parts.netloc.lower()}"
        if not _HOST_ORIGIN.match(origin):
            raise ValueError(f"not a usable form-action origin: {uri!r}")
        return origin
    # Native apps' private-use schemes (RFC 8252 7.1) are allowed as a scheme source.
    if _SCHEME.match(scheme):
        return f"{scheme}:"
    raise ValueError(f"not a usable form-action target: {uri!r}")


def _is_source(value: object) -> bool:
    """Whether `value` is a source expression `csp_source_for` could have produced."""
    return isinstance(value, str) and bool(_HOST_ORIGIN.match(value) or _SCHEME_SOURCE.match(value))


def allow_form_action(request: Request, *uris: str) -> None:
    """Let the page for `request` submit forms (and their redirects) to these URIs' origins."""
    sources: list[str] = list(getattr(request.state, FORM_ACTION_STATE_KEY, []))
    for uri in uris:
        source = csp_source_for(uri)
        if source not in sources:
            sources.append(source)
    setattr(request.state, FORM_ACTION_STATE_KEY, sources)


def content_security_policy(form_action_sources: list[str] | tuple[str, ...] = ()) -> str:
    """The policy for one response, with extra `form-action` sources after `'self'`."""
    form_action = " ".join(["'self'", *form_action_sources])
    return f"{BASE_CSP}; form-action {form_action}"


def security_headers(
    *, hsts: bool, form_action_sources: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """The headers every response gets (HTML responses also get `Cache-Control`)."""
    headers = [
        ("Content-Security-Policy", content_security_policy(form_action_sources)),
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    if hsts:
        headers.append(("Strict-Transport-Security", HSTS_VALUE))
    return headers


class SecurityHeadersMiddleware:
    """Adds the security headers above to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts
        #: The headers of a response with no extra form-action source, encoded once.
        self._plain = _encoded(security_headers(hsts=hsts))
        self._plain_html = [*self._plain, (b"cache-control", b"no-store")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap `send` so the headers are added as the response starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add_headers(scope, message)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _add_headers(self, scope: Scope, message: Message) -> None:
        state = scope.get("state") or {}
        extra = state.get(FORM_ACTION_STATE_KEY, ()) if isinstance(state, dict) else ()
        # Checked again here, in case a route set the state by hand: never inject into CSP.
        sources = tuple(s for s in extra if _is_source(s))
        raw = message.get("headers") or []
        if not isinstance(raw, list):
            raw = list(raw)
        message["headers"] = raw
        names = {name.lower() for name, _ in raw}
        html = any(
            name.lower() == b"content-type" and value.startswith(b"text/html")
            for name, value in raw
        )
        if not sources and names.isdisjoint(_OURS_HTML if html else _OURS):
            # The usual case, on every response: nothing of ours to replace, so the
            # encoded headers are appended as they are.
            raw.extend(self._plain_html if html else self._plain)
            return
        headers = MutableHeaders(scope=message)
        for name, value in security_headers(hsts=self.hsts, form_action_sources=sources):
            headers[name] = value
        if html:
            headers["Cache-Control"] = "no-store"


#: The names of the headers the middleware sets (lower case, as they are compared), and
#: on an HTML response.
_OURS = frozenset(name.lower().encode("latin-1") for name, _ in security_headers(hsts=True))
_OURS_HTML = _OURS | {b"cache-control"}


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def install(app: Starlette, *, hsts: bool) -> None:
    """Wrap `app`'s whole middleware stack, error handling included, in the headers."""
    build_inner = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return SecurityHeadersMiddleware(build_inner(), hsts=hsts)

    # Starlette builds the stack lazily on the first request, from this method.
    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010
