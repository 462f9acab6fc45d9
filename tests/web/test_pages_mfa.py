"""Authenticator setup and the security code over real HTTP (issue 4 points 1, 2, 3):
enrolment only with a right code from this page's key, a half-finished setup in another
tab, optional setup before the mandatory date, replayed and wrong codes, failure budgets
kept apart, and step-up."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pyotp
import pytest
from sqlalchemy import func, select

from idp.accounts import totp
from idp.admin.users import create_account
from idp.crypto import token_digest
from idp.models import LoginTransaction, TotpCredential
from idp.oauth.acr import ACR_MFA
from tests.conftest import LiveServer, start_live_server
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    oauth_client,
    register_client,
    register_person,
    signed_in_browser,
    verify_id_token,
)
from tests.flows.signin import (
    Page,
    SignInFailed,
    Started,
    mark_code_used,
    parse_page,
    sign_in,
    start_sign_in,
    totp_code,
)

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def app(live_server: LiveServer) -> RegisteredClient:
    return register_client(live_server, service_name="OcularOutcomes")


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as client:
        yield client


def new_person(server: LiveServer, email: str = "sam@example.org") -> str:
    """An account with a password and no authenticator yet; returns its id."""
    with server.services.sessions() as db, db.begin():
        return create_account(db, email=email, password=PASSWORD).id


def credentials(server: LiveServer) -> int:
    with server.services.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(TotpCredential)) or 0)


def to_stage_page(
    browser: httpx.Client, server: LiveServer, started: Started, email: str
) -> tuple[httpx.Response, Page]:
    """Sign in with the password; return the page that follows (setup or code)."""
    page = parse_page(browser.get(server.url + started.response.headers["location"]).text)
    form = page.form_with("password")
    assert form is not None
    posted = browser.post(
        f"{server.url}/signin?tx={started.tx}",
        data={**form.fields, "email": email, "password": PASSWORD},
    )
    assert posted.status_code == 303
    shown = browser.get(server.url + posted.headers["location"])
    return shown, parse_page(shown.text)


def post_code(
    browser: httpx.Client, server: LiveServer, started: Started, page: Page, code: str
) -> tuple[httpx.Response, Page]:
    form = page.form_with("code")
    assert form is not None
    path = form.action
    posted = browser.post(server.url + path, data={**form.fields, "code": code})
    assert posted.status_code == 303
    if not posted.headers["location"].startswith("/signin"):
        return posted, Page([], None, "", "")
    shown = browser.get(server.url + posted.headers["location"])
    return shown, parse_page(shown.text)


def wrong_code_for(secret: str) -> str:
    """Six digits that are not the code of the current, previous or next step."""
    now = time.time()
    near = {pyotp.TOTP(secret).at(now + d) for d in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def test_setup_page_shows_qr_key_and_instructions(live_server, app, browser) -> None:
    new_person(live_server)
    started = start_sign_in(live_server, app, browser)
    shown, page = to_stage_page(browser, live_server, started, "sam@example.org")
    html = shown.text
    assert page.kind == "setup"
    assert page.form_with("skip") is None  # mandatory since IDP_MFA_REQUIRED_FROM
    assert "Microsoft Authenticator" in html
    assert '"Authenticator" browser extension for Chrome or Edge' in html
    assert '<label class="nhsuk-label" for="code">Security code</label>' in html
    assert 'autocomplete="one-time-code"' in html
    assert 'inputmode="numeric"' in html
    assert "OcularOutcomes" in html
    assert live_server.services.settings.support_contact in html
    # The key in groups of four, 160 bits of base32.
    assert page.setup_key is not None
    assert len(page.setup_key) == 32
    groups = html.split('id="setup-key">', 1)[1].split("</p>", 1)[0]
    assert groups.count("idp-setup-key__group") == 8
    # The QR code is an inline image of the otpauth URI (decoded in the browser tests).
    assert 'src="data:image/svg+xml;base64,' in html
    # Reloading shows the same pending key: it lives in this transaction only.
    assert parse_page(browser.get(str(shown.url)).text).setup_key == page.setup_key
    with live_server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(started.tx))
        assert row.pending_totp_encrypted
        assert page.setup_key not in row.pending_totp_encrypted
    assert credentials(live_server) == 0


def test_provisioning_uri_names_the_service(live_server) -> None:
    uri = totp.provisioning_uri(
        "JBSWY3DPEHPK3PXP", email="sam@example.org", issuer="OcularOutcomes"
    )
    parts = urlsplit(uri)
    assert unquote(parts.path) == "/OcularOutcomes:sam@example.org"
    query = parse_qs(parts.query)
    assert query["issuer"] == ["OcularOutcomes"]
    assert (query["digits"], query["period"], query["algorithm"]) == (["6"], ["30"], ["SHA1"])


def test_nothing_is_enrolled_until_the_code_is_right(live_server, app, browser) -> None:
    new_person(live_server)
    started = start_sign_in(live_server, app, browser)
    _, page = to_stage_page(browser, live_server, started, "sam@example.org")
    secret = page.setup_key
    for code, message in (
        ("", "Enter the 6-digit security code"),
        ("12ab56", "Enter the security code as 6 digits"),
        (wrong_code_for(secret), "The security code is not right"),
    ):
        _, page = post_code(browser, live_server, started, page, code)
        assert message in page.errors
        assert page.kind == "setup"
        assert page.setup_key == secret
        assert credentials(live_server) == 0
    posted, _ = post_code(browser, live_server, started, page, totp_code(secret))
    assert posted.headers["location"] == f"/authorize/resume?tx={started.tx}"
    assert credentials(live_server) == 1


def test_half_finished_setup_in_another_tab_cannot_be_used(live_server, app, browser) -> None:
    new_person(live_server)
    first = start_sign_in(live_server, app, browser)
    second = start_sign_in(live_server, app, browser)
    _, page_a = to_stage_page(browser, live_server, first, "sam@example.org")
    _, page_b = to_stage_page(browser, live_server, second, "sam@example.org")
    assert page_a.setup_key != page_b.setup_key
    # Tab B confirmed with a code from tab A's key: refused, nothing enrolled.
    _, shown = post_code(browser, live_server, second, page_b, totp_code(page_a.setup_key))
    assert "The security code is not right" in shown.errors
    assert credentials(live_server) == 0
    # Tab A finishes with its own key; tab B's key can then never be enrolled.
    posted, _ = post_code(browser, live_server, first, page_a, totp_code(page_a.setup_key))
    assert posted.headers["location"].startswith("/authorize/resume")
    _, shown = post_code(browser, live_server, second, shown, totp_code(page_b.setup_key))
    assert "set up for your account in another window" in shown.errors
    assert shown.kind == "code"
    with live_server.services.sessions() as db:
        stored = db.scalars(select(TotpCredential)).one()
        secret = totp.decrypt_secret(
            live_server.services.encryptor, stored.secret_encrypted, account_id=stored.account_id
        )
    assert secret == page_a.setup_key


def test_replayed_and_wrong_codes_are_refused(live_server, app, browser) -> None:
    person = register_person(live_server)
    at = time.time()
    first = start_sign_in(live_server, app, browser)
    result = sign_in(
        browser, first.response, email=person.email, password=PASSWORD,
        totp_secret=person.totp_secret, at=at,
    )  # fmt: skip
    assert result.response.headers["location"].startswith(app.redirect_uri)
    second = start_sign_in(live_server, app, browser, prompt="login")
    with pytest.raises(SignInFailed, match="has been used already"):
        sign_in(
            browser, second.response, email=person.email, password=PASSWORD,
            totp_secret=person.totp_secret, at=at,
        )  # fmt: skip
    page = parse_page(browser.get(f"{live_server.url}/signin/code?tx={second.tx}").text)
    _, page = post_code(browser, live_server, second, page, wrong_code_for(person.totp_secret))
    assert "The security code is not right or has been used already" in page.errors
    mark_code_used(person.totp_secret, at=at)
    result = sign_in(
        browser, browser.get(f"{live_server.url}/signin/code?tx={second.tx}"),
        email=person.email, password=PASSWORD, totp_secret=person.totp_secret,
    )  # fmt: skip
    assert result.response.headers["location"].startswith(app.redirect_uri)


def freeze_clock(server: LiveServer) -> dt.datetime:
    """Stop the pages' clock, so the throttle's delays are exact."""
    frozen = dt.datetime.now(dt.UTC)
    server.services.extras["clock"] = lambda: frozen
    return frozen


def test_code_failures_have_their_own_budget(live_server, app, browser) -> None:
    person = register_person(live_server)
    at = freeze_clock(live_server).timestamp()
    started = start_sign_in(live_server, app, browser)
    _, page = to_stage_page(browser, live_server, started, person.email)
    wrong = wrong_code_for(person.totp_secret)
    for _ in range(5):  # the account budget's free failures
        _, page = post_code(browser, live_server, started, page, wrong)
        assert "not right" in page.errors
    _, page = post_code(browser, live_server, started, page, totp_code(person.totp_secret, at=at))
    assert "Too many attempts. Try again in 1 minute." in page.errors
    assert page.kind == "code"
    # The password budget is untouched: a new journey gets past the password.
    other = start_sign_in(live_server, app, browser)
    _, next_page = to_stage_page(browser, live_server, other, person.email)
    assert next_page.kind == "code"
    assert next_page.errors == ""


def test_password_failures_are_throttled_before_verifying(live_server, app, browser) -> None:
    person = register_person(live_server)
    freeze_clock(live_server)
    started = start_sign_in(live_server, app, browser)
    form = parse_page(browser.get(live_server.url + started.response.headers["location"]).text)
    fields = form.form_with("password").fields
    url = f"{live_server.url}/signin?tx={started.tx}"
    for _ in range(5):
        browser.post(url, data={**fields, "email": person.email, "password": "wrong one 1"})
    right = browser.post(url, data={**fields, "email": person.email, "password": PASSWORD})
    page = parse_page(browser.get(live_server.url + right.headers["location"]).text)
    assert "Too many attempts. Try again in 1 minute." in page.errors
    with live_server.services.sessions() as db:
        assert db.get(LoginTransaction, token_digest(started.tx)).account_id is None


@pytest.fixture
def optional_server(database_url: str) -> Iterator[LiveServer]:
    """A provider whose MFA start date is still ahead."""
    server = start_live_server(database_url, mfa_required_from=dt.date(2099, 3, 5))
    yield server
    server.stop()
    server.services.engine.dispose()


def test_before_the_mandatory_date_setup_may_be_skipped(optional_server, browser) -> None:
    server = optional_server
    app = register_client(server)
    new_person(server)
    started = start_sign_in(server, app, browser)
    shown, page = to_stage_page(browser, server, started, "sam@example.org")
    assert page.kind == "setup"
    assert "From 5 March 2099 you must use an authenticator app" in shown.text
    result = sign_in(browser, shown, email="sam@example.org", password=PASSWORD, setup="skip")
    code = parse_qs(urlsplit(result.response.headers["location"]).query)["code"][0]
    token = oauth_client(server, app).fetch_token(
        f"{server.url}/token", code=code, code_verifier=started.code_verifier
    )
    claims = verify_id_token(server, token["id_token"], client_id=app.client_id)
    assert claims["amr"] == ["pwd"]
    assert credentials(server) == 0
    # A client that asks for MFA gets no "Skip for now".
    wants_mfa = start_sign_in(server, app, browser, acr_values=ACR_MFA, prompt="login")
    _, page = to_stage_page(browser, server, wants_mfa, "sam@example.org")
    assert page.kind == "setup"
    assert page.form_with("skip") is None


def test_skip_is_refused_once_mfa_is_mandatory(live_server, app, browser) -> None:
    new_person(live_server)
    started = start_sign_in(live_server, app, browser)
    _, page = to_stage_page(browser, live_server, started, "sam@example.org")
    csrf = page.form_with("code").fields["csrf_token"]
    posted = browser.post(
        f"{live_server.url}/signin/setup/skip?tx={started.tx}",
        data={"csrf_token": csrf, "skip": "1"},
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == f"/signin/setup?tx={started.tx}"
    with live_server.services.sessions() as db:
        assert db.get(LoginTransaction, token_digest(started.tx)).completed_at is None


def test_step_up_asks_only_for_the_code(live_server, app) -> None:
    person: Person = register_person(live_server)
    browser = signed_in_browser(live_server, person, amr=("pwd",))
    started = start_sign_in(live_server, app, browser, acr_values=ACR_MFA)
    result = sign_in(
        browser, started.response, email="unused", password="unused",
        totp_secret=person.totp_secret,
    )  # fmt: skip
    assert result.pages == ["code"]
    code = parse_qs(urlsplit(result.response.headers["location"]).query)["code"][0]
    token = oauth_client(live_server, app).fetch_token(
        f"{live_server.url}/token", code=code, code_verifier=started.code_verifier
    )
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert {"pwd", "otp"} <= set(claims["amr"])
    assert claims["acr"] == ACR_MFA
    browser.close()


def test_step_up_without_an_authenticator_goes_to_setup(optional_server) -> None:
    """Someone who skipped setup, asked for MFA by an app, must set up an app now."""
    server = optional_server
    app = register_client(server)
    account_id = new_person(server)
    person = Person(account_id, "sam@example.org", PASSWORD, "")
    browser = signed_in_browser(server, person, amr=("pwd",))
    started = start_sign_in(server, app, browser, acr_values=ACR_MFA)
    assert started.response.headers["location"].startswith("/signin?tx=")
    result = sign_in(browser, started.response, email="unused", password="unused")
    assert result.pages == ["setup"]
    assert result.response.headers["location"].startswith(app.redirect_uri)
    assert credentials(server) == 1
    browser.close()


def test_journey_across_two_instances_and_a_code_used_on_one_is_spent_on_both(
    live_server, database_url, app, browser
) -> None:
    """Scale-out: transactions, codes and budgets live in the database, not a process."""
    other = start_live_server(database_url)
    try:
        person = register_person(live_server)
        at = time.time()
        started = start_sign_in(live_server, app, browser)
        # /authorize on the first instance; the pages (and resume) on the second.
        moved = httpx.Response(
            303, headers={"location": started.response.headers["location"]},
            request=httpx.Request("GET", f"{other.url}/authorize"),
        )  # fmt: skip
        result = sign_in(
            browser, moved, email=person.email, password=PASSWORD,
            totp_secret=person.totp_secret, at=at,
        )  # fmt: skip
        got = parse_qs(urlsplit(result.response.headers["location"]).query)
        assert "code" in got
        assert got["iss"] == [other.url]
        # The same code on the first instance is refused.
        again = start_sign_in(live_server, app, browser, prompt="login")
        with pytest.raises(SignInFailed, match="has been used already"):
            sign_in(
                browser, again.response, email=person.email, password=PASSWORD,
                totp_secret=person.totp_secret, at=at,
            )  # fmt: skip
    finally:
        other.stop()
        other.services.engine.dispose()
