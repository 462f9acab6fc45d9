"""Renders the hosted pages: a Jinja2 environment over `web/templates/` and `render()`.

Every page extends `base.html` (NHS.UK header with the client's service name, skip link,
`<main id="maincontent">`, footer with the support contact) and builds forms with the
macros in `macros.html`. Templates see `title`, `service_name`, `support_contact`,
`static_url` and whatever the route passes. Undefined names are errors (StrictUndefined),
so a typo fails the test that renders the page instead of showing an empty field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from idp.web.security import allow_form_action
from idp.web.static_files import static_url

TEMPLATES_DIR = Path(__file__).parent / "templates"

#: Shown in the header when the client does not name its service.
DEFAULT_SERVICE_NAME = "PharmOutcomes"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.do"],
    # Templates ship with the package and do not change while it runs: no stat() of each
    # template (and of base.html and macros.html it pulls in) on every render.
    auto_reload=False,
)
environment.globals["static_url"] = static_url


def _support_contact(request: Request) -> str:
    """The configured support text; the app's settings when the app has services."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise RuntimeError("render() needs app.state.services (built by create_app)")
    text: str = services.settings.support_contact
    return text


def render_to_string(request: Request, template: str, context: Mapping[str, Any]) -> str:
    """The HTML of `template` with the common page context added."""
    page: dict[str, Any] = {
        "service_name": DEFAULT_SERVICE_NAME,
        "errors": [],
        **context,
    }
    page.setdefault("title", page["service_name"])
    page["support_contact"] = _support_contact(request)
    page["request"] = request
    return environment.get_template(template).render(page)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    form_action: Iterable[str] = (),
) -> HTMLResponse:
    """An HTML response of `template`.

    `context` must give `title` (the page heading, also the `<title>`); it may give
    `service_name` (the client's, default PharmOutcomes) and `errors` (a list of
    `{"text", "href"}` for the error summary; a non-empty list prefixes the title with
    "Error: "). `form_action` lists URIs outside this origin that the page's forms may
    reach, directly or through redirects (see `idp.web.security`).
    """
    allow_form_action(request, *form_action)
    return HTMLResponse(
        render_to_string(request, template, context),
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )
