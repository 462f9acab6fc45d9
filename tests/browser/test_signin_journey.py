"""The sign-in journey in Debian's Chromium (issue 4 point 8), from a real relying-party
request to `/authorize` to tokens at the app.

The app is a tiny HTTP server on another loopback port; it receives the redirect, and the
test exchanges the code with Authlib's client (PKCE S256), as the app would. Enrolment
reads the key by decoding a screenshot of the QR code (zxing-cpp), never the key text.
Every page is checked with axe-core (WCAG 2.2 AA) and at 320 px wide.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import zxingcpp
from authlib.integrations.httpx_client import OAuth2Client
from PIL import Image

from idp.admin.clients import create_client
from idp.admin.users import create_account
from tests.browser.toolkit import assert_fits_320, axe_check
from tests.conftest import LiveServer, free_port
from tests.flows.oidc import verify_id_token
from tests.flows.signin import totp_code

PASSWORD = "correct horse battery staple 42"
SERVICE = "PharmOutcomes"


class _Callback(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = b"<!doctype html><title>App</title><h1>Signed in to the app</h1>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def relying_party() -> Iterator[str]:
    """The app's redirect URI, served on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Callback)
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    server.shutdown()
    server.server_close()


@dataclass
class App:
    """The relying party as its developer sees it."""

    server: LiveServer
    client_id: str
    client_secret: str | None
    redirect_uri: str
    verifiers: dict[str, str] = field(default_factory=dict)

    def oauth(self) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            redirect_uri=self.redirect_uri,
            scope="openid email profile",
            code_challenge_method="S256",
        )

    def authorization_url(self, **params: str) -> str:
        """A fresh request with PKCE, built by Authlib's client."""
        from authlib.common.security import generate_token

        verifier = generate_token(48)
        url, state = self.oauth().create_authorization_url(
            f"{self.server.url}/authorize", code_verifier=verifier, **params
        )
        self.verifiers[state] = verifier
        return str(url)

    def tokens(self, callback_url: str) -> dict[str, Any]:
        """Exchange the code in the redirect for tokens, and check the ID token."""
        state = parse_qs(urlsplit(callback_url).query)["state"][0]
        token: dict[str, Any] = self.oauth().fetch_token(
            f"{self.server.url}/token",
            authorization_response=callback_url,
            code_verifier=self.verifiers[state],
            state=state,
        )
        token["claims"] = verify_id_token(self.server, token["id_token"], client_id=self.client_id)
        return token


@pytest.fixture
def app(live_server: LiveServer, relying_party: str) -> App:
    with live_server.services.sessions() as db, db.begin():
        client, secret = create_client(
            db, name="PharmOutcomes web", service_name=SERVICE, redirect_uris=[relying_party]
        )
        return App(live_server, client.client_id, secret, relying_party)


def new_account(server: LiveServer, email: str) -> None:
    with server.services.sessions() as db, db.begin():
        create_account(db, email=email, password=PASSWORD)


def checked(page: Any, *, axe: bool = True) -> None:
    """Every page: the service name and support contact, 320 px, and axe (JS only)."""
    body = page.locator("body").inner_text()
    assert SERVICE in body
    assert "0345 450 6279" in body  # the default support contact
    assert_fits_320(page)
    if axe:
        axe_check(page)


def submit(page: Any, button: str = "Continue") -> None:
    """Press a form's button and wait for the page it leads to: every form here posts
    and is answered with a new page, and reading the old one meanwhile (its error
    summary, say) would test what was there before."""
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()


def enter_password(page: Any, email: str, *, axe: bool = True) -> None:
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in"
    checked(page, axe=axe)
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    submit(page)


def secret_from_qr(page: Any, *, email: str) -> str:
    """Decode the QR code from a screenshot of the image, as a phone camera would."""
    png = page.locator("#qr-code").screenshot()
    # QR codes only, as a phone's camera app looks for: a scan for every format once
    # gave two results for one image in CI.
    found = zxingcpp.read_barcodes(
        Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode
    )
    assert len(found) == 1, [(str(code.format), code.position) for code in found]
    uri = urlsplit(found[0].text)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/{SERVICE}:{email}"
    query = parse_qs(uri.query)
    assert query["issuer"] == [SERVICE]
    return query["secret"][0]


def enter_code(page: Any, code: str) -> None:
    page.get_by_label("Security code").fill(code)
    submit(page)


def errors(page: Any) -> str:
    # After a click, Playwright waits for the next page to start loading, not to finish:
    # the summary could be read half parsed (its heading, not yet its list).
    page.wait_for_load_state()
    return page.locator(".nhsuk-error-summary").inner_text()


def first_sign_in(page: Any, app: App, email: str, *, axe: bool = True) -> tuple[str, str]:
    """Enrol from the QR code and reach the app; returns the secret and callback URL."""
    page.goto(app.authorization_url())
    enter_password(page, email, axe=axe)
    assert page.get_by_role("heading", level=1).inner_text() == "Set up an authenticator app"
    checked(page, axe=axe)
    secret = secret_from_qr(page, email=email)
    assert "Microsoft Authenticator" in page.content()
    assert page.get_by_role("button", name="Skip for now").count() == 0  # mandatory
    enter_code(page, totp_code(secret))
    page.wait_for_url(f"{app.redirect_uri}?*")
    return secret, page.url


def test_first_and_second_sign_in_replay_and_wrong_code(page: Any, app: App) -> None:
    email = "alex@pharmacy.example"
    new_account(app.server, email)
    secret, callback = first_sign_in(page, app, email)
    claims = app.tokens(callback)["claims"]
    assert {"pwd", "otp"} <= set(claims["amr"])
    assert page.get_by_role("heading", level=1).inner_text() == "Signed in to the app"

    # A second sign-in (a new browser) asks for a code from the app.
    second = page.context.browser.new_context()
    try:
        other = second.new_page()
        other.goto(app.authorization_url())
        enter_password(other, email)
        assert other.get_by_role("heading", level=1).inner_text() == "Enter a security code"
        checked(other)
        code = totp_code(secret)
        enter_code(other, code)
        other.wait_for_url(f"{app.redirect_uri}?*")
        assert {"pwd", "otp"} <= set(app.tokens(other.url)["claims"]["amr"])

        # The same code again, in a third journey: refused; so is a wrong one.
        other.goto(app.authorization_url(prompt="login"))
        enter_password(other, email)
        enter_code(other, code)
        assert "has been used already" in errors(other)
        checked(other)
        enter_code(other, "000000" if code != "000000" else "111111")
        assert "The security code is not right" in errors(other)
        assert other.url.startswith(f"{app.server.url}/signin/code?tx=")
    finally:
        second.close()


def test_half_finished_setup_in_another_tab(page: Any, app: App) -> None:
    email = "bea@pharmacy.example"
    new_account(app.server, email)
    page.goto(app.authorization_url())
    enter_password(page, email, axe=False)
    first_secret = secret_from_qr(page, email=email)
    tab = page.context.new_page()
    tab.goto(app.authorization_url())
    enter_password(tab, email, axe=False)
    second_secret = secret_from_qr(tab, email=email)
    assert first_secret != second_secret
    enter_code(tab, totp_code(first_secret))
    assert "The security code is not right" in errors(tab)
    checked(tab)
    # The first tab's own key still works; the second tab's can no longer be enrolled.
    enter_code(page, totp_code(first_secret))
    page.wait_for_url(f"{app.redirect_uri}?*")
    enter_code(tab, totp_code(second_secret))
    assert "set up for your account in another window" in errors(tab)


def test_the_same_journey_without_javascript(nojs_page: Any, app: App) -> None:
    email = "cal@pharmacy.example"
    new_account(app.server, email)
    secret, callback = first_sign_in(nojs_page, app, email, axe=False)
    assert {"pwd", "otp"} <= set(app.tokens(callback)["claims"]["amr"])
    nojs_page.goto(app.authorization_url(prompt="login"))
    enter_password(nojs_page, email, axe=False)
    enter_code(nojs_page, "12345")
    assert "Enter the security code as 6 digits" in errors(nojs_page)
    enter_code(nojs_page, totp_code(secret))
    nojs_page.wait_for_url(f"{app.redirect_uri}?*")
    assert {"pwd", "otp"} <= set(app.tokens(nojs_page.url)["claims"]["amr"])


def test_error_and_problem_pages_are_accessible(page: Any, app: App) -> None:
    page.goto(app.authorization_url())
    submit(page)
    assert "Enter your email address" in errors(page)
    checked(page)
    # The summary links to the field it is about.
    assert page.locator(".nhsuk-error-summary a").first.get_attribute("href") == "#email"
    enter_password(page, "nobody@pharmacy.example")
    assert "Enter a correct email address and password" in errors(page)
    page.goto(f"{app.server.url}/signin?tx=unknown")
    assert page.get_by_role("heading", level=1).inner_text() == "This sign-in link does not work"
    checked(page)


def test_consent_page_and_the_back_button_after_success(
    page: Any, live_server: LiveServer, relying_party: str
) -> None:
    with live_server.services.sessions() as db, db.begin():
        client, secret = create_client(
            db, name="Audit app", service_name=SERVICE, redirect_uris=[relying_party],
            first_party=False,
        )  # fmt: skip
    app = App(live_server, client.client_id, secret, relying_party)
    email = "dee@pharmacy.example"
    new_account(live_server, email)
    page.goto(app.authorization_url())
    enter_password(page, email)
    secret_key = secret_from_qr(page, email=email)
    enter_code(page, totp_code(secret_key))
    assert page.get_by_role("heading", level=1).inner_text() == (
        f"Allow {SERVICE} to use your details?"
    )
    checked(page)
    consent_url = page.url
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{app.redirect_uri}?*")
    assert "code" in parse_qs(urlsplit(page.url).query)
    # Back to a page of the finished sign-in: explained, with a way to start again.
    page.goto(consent_url)
    assert page.get_by_role("heading", level=1).inner_text() == "You have already signed in"
    checked(page)
    page.get_by_role("link", name="Start again").click()
    # Still signed in (single sign-on): only this app's consent is asked again.
    page.wait_for_url(f"{live_server.url}/signin/consent?tx=*")
    assert page.url != consent_url  # a new sign-in, not the finished one


def test_optional_setup_before_the_mandatory_date(
    page: Any, database_url: str, relying_party: str
) -> None:
    import datetime as dt

    from tests.conftest import start_live_server

    server = start_live_server(database_url, mfa_required_from=dt.date(2099, 3, 5))
    try:
        with server.services.sessions() as db, db.begin():
            client, secret = create_client(
                db, name="PharmOutcomes web", service_name=SERVICE, redirect_uris=[relying_party]
            )
        app = App(server, client.client_id, secret, relying_party)
        new_account(server, "eli@pharmacy.example")
        page.goto(app.authorization_url())
        enter_password(page, "eli@pharmacy.example")
        assert "From 5 March 2099 you must use an authenticator app" in page.content()
        checked(page)
        page.get_by_role("button", name="Skip for now").click()
        page.wait_for_url(f"{app.redirect_uri}?*")
        assert app.tokens(page.url)["claims"]["amr"] == ["pwd"]
    finally:
        server.stop()
        server.services.engine.dispose()
