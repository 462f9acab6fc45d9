"""Exact-path dispatch of the sign-in journey's routes, ahead of FastAPI's router.

FastAPI's router matches each request against the routes of every included router in
turn (to find the router, then again inside it) and solves the endpoint's dependencies
before calling it: about 0.2 ms of CPU a request on the event loop, two thirds of what a
page view's own work costs (bench/README.md). The routes of a sign-in journey take only
the request and return a response, so for exactly their method and path the endpoint is
called directly.
Everything else (another method, HEAD, a trailing slash, any other path) goes through
the router as before.

It is a middleware inside the application's stack (`install`), so what wraps the router
wraps these routes alike: the security headers, the 500 page of an unexpected error.
The routes declare no dependencies, raise no `HTTPException` and read their bodies
themselves (`idp.web.pages.forms`), so nothing the router would have added is missing;
`tests/web/test_exact_routes.py` checks that every route served here is the one the
router would have chosen, with nothing but the request to take.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class ExactRoutes:
    """Calls the endpoint of an exact `(method, path)` itself; passes anything else on."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one request."""
        if scope["type"] == "http":
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def journey_routes() -> dict[tuple[str, str], Endpoint]:
    """The routes every sign-in takes: the authorization request, the password and
    security-code pages and their forms, and the resume."""
    from idp.web import protocol
    from idp.web.pages import mfa, signin

    return {
        ("GET", "/authorize"): protocol.authorize_endpoint,
        ("GET", "/authorize/resume"): protocol.authorize_resume,
        ("GET", "/signin"): signin.show_signin,
        ("POST", "/signin"): signin.submit_signin,
        ("GET", "/signin/code"): mfa.show_code,
        ("POST", "/signin/code"): mfa.submit_code,
    }


def install(app: FastAPI) -> None:
    """Serve the journey's routes ahead of `app`'s router."""
    app.add_middleware(ExactRoutes, routes=journey_routes())
