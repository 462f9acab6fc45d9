"""Authorization responses to the client: query redirect or `form_post`, with `iss`.

Every authorization response, errors included, carries `iss` (RFC 9207 2). The browser
is sent with 303 See Other, which also makes a POSTed `/authorize` continue with GET
(RFC 9700 4.11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from authlib.common.urls import add_params_to_uri
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

#: Response modes served (OAuth 2.0 Multiple Response Types, Form Post Response Mode).
RESPONSE_MODES = ("query", "form_post")
#: The tiny script that submits a `form_post` page (CSP `script-src 'self'`: no inline).
FORM_POST_SCRIPT_PATH = "/authorize/form_post.js"
FORM_POST_SCRIPT = b'document.getElementById("form-post").submit();\n'


@dataclass(frozen=True)
class ClientResponse:
    """Parameters to deliver to the client's (validated) redirect URI."""

    redirect_uri: str
    params: Sequence[tuple[str, str]]
    response_mode: str = "query"


def response_mode_of(data: dict[str, str]) -> str:
    """The requested response mode if we serve it, else `query`."""
    mode = data.get("response_mode") or "query"
    return mode if mode in RESPONSE_MODES else "query"


def deliver(request: Request, outcome: ClientResponse, *, issuer: str) -> Response:
    """The response that takes the browser to the client with `outcome.params` + `iss`."""
    params = [*outcome.params, ("iss", issuer)]
    if outcome.response_mode == "form_post":
        return _form_post(request, outcome.redirect_uri, params)
    location = add_params_to_uri(outcome.redirect_uri, params)
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def _form_post(request: Request, action: str, params: Sequence[tuple[str, str]]) -> Response:
    """A page whose form posts the parameters to the client: submitted by a same-origin
    script, and with a visible Continue button for browsers without scripts."""
    from idp.web.templating import render

    return render(
        request,
        "oauth/form_post.html",
        {
            "title": "Continue to the service",
            "action": action,
            "params": list(params),
            "script_path": FORM_POST_SCRIPT_PATH,
        },
        form_action=[action],
        headers={"Cache-Control": "no-store"},
    )
