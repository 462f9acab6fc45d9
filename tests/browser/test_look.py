"""The look of the hosted pages in Chromium: NHS.UK styles, WCAG 2.2 AA, 320 px, CSP.

A test-only FastAPI app, built by the real `create_app` (so the real security middleware
and static files), adds a few routes that render the real templates and macros; it is
served by uvicorn on loopback next to a stand-in client app on another origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import ChoiceLoader, DictLoader

from idp.app import build_services, create_app
from idp.settings import Settings
from idp.web import templating
from tests.browser.toolkit import assert_fits_320, axe_check, csp_violations, serve_app

SUPPORT = "For help signing in, call the test service desk on 0300 000 0000."
NHS_BLUE = "rgb(0, 94, 184)"

# Pages that exercise every macro, in the shapes the hosted pages use them.
GALLERY = """{% extends "base.html" %}
{% import "macros.html" as ui %}
{% block before_content %}{{ ui.back_link("/look/error") }}{% endblock %}
{% block content %}
{{ ui.error_summary(errors) }}
<h1>{{ title }}</h1>
<form method="post" action="/look/bounce" novalidate>
  {{ ui.csrf("token-value") }}
  {{ ui.text_input("email", "Email address", value="someone@example.org",
       error="Enter an email address in the correct format, like name@example.com",
       autocomplete="username", type="email", spellcheck=False) }}
  {{ ui.text_input("password", "Password", type="password",
       autocomplete="current-password") }}
  {{ ui.text_input("code", "Security code", hint="The 6-digit code from your authenticator app",
       autocomplete="one-time-code", inputmode="numeric", width=10, code=True, maxlength=6) }}
  {{ ui.inset_text("From 5 March 2024 you must set up an authenticator app to sign in.") }}
  {{ ui.details("I cannot scan the QR code", "Type this key into your authenticator instead.") }}
  {{ ui.setup_key("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP") }}
  {{ ui.warning_callout("Important", "Each person needs their own email address.") }}
  {{ ui.button("Continue") }}
  {{ ui.button("Skip for now", name="action", value="skip", secondary=True) }}
</form>
{% endblock %}
"""

FORM = """{% extends "base.html" %}
{% import "macros.html" as ui %}
{% block content %}
<h1>{{ title }}</h1>
<form method="post" action="/look/bounce">{{ ui.button("Continue") }}</form>
{% endblock %}
"""

INLINE = """<!DOCTYPE html><html lang="en-GB"><head><title>Inline</title></head>
<body><h1 style="color: rgb(255, 0, 0)">Inline</h1>
<script>document.body.dataset.ran = "yes";</script></body></html>"""


@dataclass
class Servers:
    """The test provider app and a stand-in client on another origin."""

    idp: str
    client: str


def _client_app() -> Any:
    from fastapi import FastAPI

    client = FastAPI()

    @client.api_route("/callback", methods=["GET", "POST"])
    def callback() -> HTMLResponse:
        return HTMLResponse("<!DOCTYPE html><title>Client</title><p>Client received</p>")

    return client


def _look_app(settings: Settings, client_url: str) -> Any:
    app = create_app(services=build_services(settings))

    @app.get("/look/error")
    def error(request: Request) -> HTMLResponse:
        context = {
            "title": "Your sign-in has expired",
            "message": "You took too long to sign in. Go back to the app and sign in again.",
            "start_again_url": "/look/error",
        }
        return templating.render(request, "error.html", context, status_code=400)

    @app.get("/look/gallery")
    def gallery(request: Request, service: str = "PharmOutcomes") -> HTMLResponse:
        errors = [
            {
                "text": "Enter an email address in the correct format, like name@example.com",
                "href": "#email",
            }
        ]
        context = {"title": "Sign in", "service_name": service, "errors": errors}
        return templating.render(request, "_look_gallery.html", context)

    @app.get("/look/form")
    def form(request: Request, allow: int = 0) -> HTMLResponse:
        allowed = [f"{client_url}/callback"] if allow else []
        context = {"title": "Check your details"}
        return templating.render(request, "_look_form.html", context, form_action=allowed)

    @app.post("/look/bounce")
    def bounce() -> RedirectResponse:
        return RedirectResponse(f"{client_url}/callback", status_code=303)

    @app.get("/look/inline")
    def inline() -> HTMLResponse:
        return HTMLResponse(INLINE)

    return app


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Both apps on loopback, with the test-only templates added for this module."""
    original = templating.environment.loader
    assert original is not None
    extra = DictLoader({"_look_gallery.html": GALLERY, "_look_form.html": FORM})
    templating.environment.loader = ChoiceLoader([original, extra])
    database = Path(tmp_path_factory.mktemp("look")) / "idp.sqlite3"
    settings = Settings(database_url=f"sqlite:///{database}", support_contact=SUPPORT)
    try:
        with (
            serve_app(_client_app()) as client_url,
            serve_app(_look_app(settings, client_url)) as idp_url,
        ):
            yield Servers(idp=idp_url, client=client_url)
    finally:
        templating.environment.loader = original


def test_error_page_has_the_nhs_look_and_the_support_contact(page: Any, servers: Servers) -> None:
    response = page.goto(f"{servers.idp}/look/error")
    assert response.status == 400
    assert page.title() == "Your sign-in has expired - PharmOutcomes"
    header = page.locator("header.nhsuk-header")
    assert header.evaluate("e => getComputedStyle(e).backgroundColor") == NHS_BLUE
    body_font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert body_font.lower().startswith("arial")
    assert page.locator(".nhsuk-header__service-name").inner_text() == "PharmOutcomes"
    assert page.locator("footer").inner_text().strip().endswith(SUPPORT)
    assert page.get_by_role("link", name="Start again").get_attribute("href") == "/look/error"
    assert page.locator("html").get_attribute("lang") == "en-GB"
    axe_check(page)
    assert_fits_320(page)


def test_every_macro_passes_axe_and_fits_320(page: Any, mobile_page: Any, servers: Servers) -> None:
    page.goto(f"{servers.idp}/look/gallery?service=Outcomes4Health")
    assert page.title() == "Error: Sign in - Outcomes4Health"
    assert page.locator(".nhsuk-header__service-name").inner_text() == "Outcomes4Health"
    summary = page.locator(".nhsuk-error-summary [role=alert]")
    assert "There is a problem" in summary.inner_text()
    assert summary.get_by_role("link").get_attribute("href") == "#email"
    email = page.get_by_label("Email address")
    assert email.get_attribute("aria-describedby") == "email-error"
    assert email.get_attribute("autocomplete") == "username"
    code = page.get_by_label("Security code")
    assert code.get_attribute("aria-describedby") == "code-hint"
    assert code.get_attribute("inputmode") == "numeric"
    assert code.get_attribute("autocomplete") == "one-time-code"
    assert page.get_by_label("Password").get_attribute("autocomplete") == "current-password"
    assert page.locator("#setup-key").inner_text() == "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP"
    axe_check(page)

    mobile_page.goto(f"{servers.idp}/look/gallery")
    assert_fits_320(mobile_page)
    axe_check(mobile_page)


def test_styles_apply_without_javascript(nojs_page: Any, servers: Servers) -> None:
    nojs_page.goto(f"{servers.idp}/look/error")
    header = nojs_page.locator("header.nhsuk-header")
    assert header.evaluate("e => getComputedStyle(e).backgroundColor") == NHS_BLUE


def test_error_summary_takes_focus_and_its_links_focus_fields_without_javascript(
    nojs_page: Any, servers: Servers
) -> None:
    # `autofocus` on the summary and plain fragment links do what nhsuk's script would.
    nojs_page.goto(f"{servers.idp}/look/gallery")
    summary = nojs_page.locator(".nhsuk-error-summary")
    assert summary.evaluate("e => e === document.activeElement")
    summary.get_by_role("link").click()
    assert nojs_page.get_by_label("Email address").evaluate("e => e === document.activeElement")


def test_csp_refuses_inline_script_and_style(page: Any, servers: Servers) -> None:
    page.goto(f"{servers.idp}/look/inline")
    assert page.evaluate("document.body.dataset.ran") is None
    heading_colour = page.locator("h1").evaluate("e => getComputedStyle(e).color")
    assert heading_colour != "rgb(255, 0, 0)"
    refused = csp_violations(page)
    assert any("script" in message for message in refused), refused
    with pytest.raises(AssertionError, match="Content-Security-Policy"):
        axe_check(page)


def test_form_reaches_another_origin_only_when_the_route_allows_it(
    page: Any, servers: Servers
) -> None:
    # Chromium checks form-action on every redirect after a POST: the 303 to the client
    # is refused unless the page allowed the client's origin.
    page.goto(f"{servers.idp}/look/form")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state()
    assert "Client received" not in page.content()
    assert any("form-action" in message for message in csp_violations(page))

    page.goto(f"{servers.idp}/look/form?allow=1")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{servers.client}/callback")
    assert page.get_by_text("Client received").is_visible()
