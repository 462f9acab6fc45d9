"""The protocol's HTTP routes: thin wrappers that read the request, run one function of
`idp.oauth` in a worker thread, and render its result.

Paths are the ones discovery advertises: `/authorize` (GET, POST), `/authorize/resume`,
`/userinfo` (GET, POST), `/logout` (GET, POST). The token, introspection and revocation
endpoints are answered in front of the application, by `idp.web.fast_protocol`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from idp.oauth import authorize, logout, userinfo
from idp.oauth.errors import OAuth2Error, browser_or_client_error, json_error
from idp.oauth.responses import FORM_POST_SCRIPT, FORM_POST_SCRIPT_PATH, ClientResponse, deliver
from idp.oauth.server import IdpAuthorizationServer, RequestData, get_oauth_server
from idp.web.deps import get_services

router = APIRouter(tags=["protocol"])


def _server(request: Request) -> IdpAuthorizationServer:
    return get_oauth_server(get_services(request))


def _authorize_response(request: Request, outcome: authorize.Outcome) -> Response:
    server = _server(request)
    if isinstance(outcome, ClientResponse):
        return deliver(request, outcome, issuer=server.settings.issuer)
    if isinstance(outcome, authorize.SignInRedirect):
        return RedirectResponse(
            outcome.location, status_code=303, headers={"Cache-Control": "no-store"}
        )
    return browser_or_client_error(request, outcome.error)


@router.api_route("/authorize", methods=["GET", "POST"], include_in_schema=False)
async def authorize_endpoint(request: Request) -> Response:
    """Authorization endpoint (RFC 6749 3.1, OIDC Core 3.1.2)."""
    server = _server(request)
    data = await RequestData.read(request)
    outcome = await authorize.start_on_loop(server, data)
    if outcome is None:
        outcome = await server.run(authorize.start, server, data)
    return _authorize_response(request, outcome)


@router.get("/authorize/resume", include_in_schema=False)
async def authorize_resume(request: Request) -> Response:
    """Where the hosted pages hand a completed sign-in back to the protocol."""
    server = _server(request)
    data = await RequestData.read(request)
    outcome = await authorize.resume_on_loop(server, data)
    if outcome is None:
        outcome = await server.run(authorize.resume, server, data)
    return _authorize_response(request, outcome)


@router.get(FORM_POST_SCRIPT_PATH, include_in_schema=False)
async def form_post_script() -> Response:
    """Submits a `form_post` page (served here: CSP forbids inline script)."""
    return Response(
        FORM_POST_SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.api_route("/userinfo", methods=["GET", "POST"], include_in_schema=False)
async def userinfo_endpoint(request: Request) -> Response:
    """UserInfo endpoint (OIDC Core 5.3), bearer token in the header or form body."""
    server = _server(request)
    data = await RequestData.read(request)
    try:
        claims = await server.run(userinfo.userinfo, server, data, read_only=True)
    except OAuth2Error as error:
        return json_error(error)
    return JSONResponse(claims, headers={"Cache-Control": "no-store"})


@router.api_route("/logout", methods=["GET", "POST"], include_in_schema=False)
async def logout_endpoint(request: Request) -> Response:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)."""
    server = _server(request)
    data = await RequestData.read(request)
    outcome = await server.run(logout.end_session_request, server, data)
    return logout.to_response(request, outcome, settings=server.settings)
