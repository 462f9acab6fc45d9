"""The email-and-password page over real HTTP: the journey to the client, no enumeration,
legacy and disabled accounts, and bad input (issue 4 points 1, 4, 6 and "Bad input")."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from idp.accounts.passwords import hash_password
from idp.crypto import token_digest
from idp.models import Account, BrowserSession, LoginTransaction, TotpCredential
from tests.conftest import LiveServer
from tests.flows.oidc import (
    Person,
    RegisteredClient,
    oauth_client,
    register_client,
    register_person,
    verify_id_token,
)
from tests.flows.signin import (
    SignInFailed,
    Started,
    parse_page,
    sign_in,
    start_sign_in,
)

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def app(live_server: LiveServer) -> RegisteredClient:
    return register_client(live_server, service_name="Outcomes4Health")


@pytest.fixture
def person(live_server: LiveServer) -> Person:
    return register_person(live_server)


@pytest.fixture
def browser() -> httpx.Client:
    with httpx.Client(follow_redirects=False) as client:
        yield client


def follow(browser: httpx.Client, response: httpx.Response, server: LiveServer) -> httpx.Response:
    """GET the page a 303 points to."""
    assert response.status_code == 303, (response.status_code, response.text[:200])
    return browser.get(server.url + response.headers["location"])


def post_signin(
    browser: httpx.Client, server: LiveServer, started: Started, **fields: str
) -> httpx.Response:
    page = parse_page(follow(browser, started.response, server).text)
    form = page.form_with("password")
    assert form is not None
    return browser.post(f"{server.url}/signin?tx={started.tx}", data={**form.fields, **fields})


def transaction(server: LiveServer, tx: str) -> LoginTransaction:
    with server.services.sessions() as db:
        row = db.get(LoginTransaction, token_digest(tx))
        assert row is not None
        return row


def session_count(server: LiveServer) -> int:
    with server.services.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(BrowserSession)) or 0)


def test_sign_in_page_labels_and_journey_to_the_client(live_server, app, person, browser) -> None:
    started = start_sign_in(live_server, app, browser, nonce="n-1")
    page = follow(browser, started.response, live_server)
    html = page.text
    assert page.status_code == 200
    assert '<label class="nhsuk-label" for="email">Email address</label>' in html
    assert '<label class="nhsuk-label" for="password">Password</label>' in html
    assert 'autocomplete="username"' in html
    assert 'autocomplete="current-password"' in html
    assert "Outcomes4Health" in html  # the client's service name
    assert live_server.services.settings.support_contact in html
    assert page.headers["cache-control"] == "no-store"

    result = sign_in(
        browser, started.response, email=person.email, password=PASSWORD,
        totp_secret=person.totp_secret,
    )  # fmt: skip
    assert result.pages == ["password", "code"]
    location = result.response.headers["location"]
    assert location.startswith(app.redirect_uri + "?")
    got = dict(parse_qsl(urlsplit(location).query))
    assert got["state"] == started.state
    token = oauth_client(live_server, app).fetch_token(
        f"{live_server.url}/token", code=got["code"], code_verifier=started.code_verifier
    )
    claims = verify_id_token(live_server, token["id_token"], client_id=app.client_id)
    assert {"pwd", "otp"} <= set(claims["amr"])
    assert claims["nonce"] == "n-1"
    assert claims["sub"] == person.account_id
    # A new session was started, and the transaction records how the person signed in.
    row = transaction(live_server, started.tx)
    assert row.completed_at is not None
    assert row.consumed_at is not None
    assert {"pwd", "otp", "mfa"} == set(row.amr)


def test_code_page_attributes(live_server, app, person, browser) -> None:
    started = start_sign_in(live_server, app, browser)
    response = post_signin(browser, live_server, started, email=person.email, password=PASSWORD)
    page = follow(browser, response, live_server)
    assert response.headers["location"] == f"/signin/code?tx={started.tx}"
    assert '<label class="nhsuk-label" for="code">Security code</label>' in page.text
    assert 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text
    assert "Outcomes4Health" in page.text
    assert live_server.services.settings.support_contact in page.text


def error_text(browser: httpx.Client, server: LiveServer, response: httpx.Response) -> str:
    return parse_page(follow(browser, response, server).text).errors


def test_unknown_email_and_wrong_password_look_the_same(live_server, app, person, browser) -> None:
    """ASVS 6.3.8: same message, same page, similar time."""
    started = start_sign_in(live_server, app, browser)
    timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
    texts: dict[str, set[str]] = {"unknown": set(), "wrong": set()}
    for _ in range(3):
        for kind, email in (("unknown", "nobody@example.org"), ("wrong", person.email)):
            begin = time.perf_counter()
            response = post_signin(
                browser, live_server, started, email=email, password="not it 123"
            )
            timings[kind].append(time.perf_counter() - begin)
            assert response.headers["location"] == f"/signin?tx={started.tx}"
            texts[kind].add(error_text(browser, live_server, response))
    assert texts["unknown"] == texts["wrong"]
    assert texts["wrong"] == {
        "There is a problem Enter a correct email address and password. Check both and try again."
    }
    # Both paths run one argon2id verification; an unknown address is not answered fast.
    assert statistics.median(timings["unknown"]) > 0.5 * statistics.median(timings["wrong"])
    row = transaction(live_server, started.tx)
    assert row.account_id is None
    assert row.stage == "password"
    assert session_count(live_server) == 0


def test_delays_do_not_reveal_which_addresses_have_accounts(
    live_server, app, person, browser
) -> None:
    """ASVS 6.3.8: an address with no account is delayed after as many failures as a real
    one, so the growing delays cannot be used to find out who has an account."""
    started = start_sign_in(live_server, app, browser)
    seen: dict[str, list[str]] = {}
    for email in ("nobody@example.org", person.email):
        seen[email] = [
            error_text(
                browser,
                live_server,
                post_signin(browser, live_server, started, email=email, password="not it 123"),
            )
            for _ in range(6)
        ]
    assert seen["nobody@example.org"] == seen[person.email]
    assert "Enter a correct email address and password" in seen[person.email][0]
    assert "Enter a correct email address and password" not in seen[person.email][-1]


def make_account(server: LiveServer, **fields: object) -> str:
    with server.services.sessions() as db, db.begin():
        account = Account(password_hash=hash_password(PASSWORD), **fields)
        db.add(account)
        db.flush()
        return account.id


def test_shared_legacy_address_is_told_only_after_the_right_password(
    live_server, app, browser
) -> None:
    for _ in range(2):
        make_account(live_server, legacy_email="Shared@Pharmacy.example")
    started = start_sign_in(live_server, app, browser)
    wrong = post_signin(
        browser, live_server, started, email="shared@pharmacy.example", password="nope nope 1"
    )
    assert "Enter a correct email address and password" in error_text(browser, live_server, wrong)
    right = post_signin(
        browser, live_server, started, email="shared@pharmacy.example", password=PASSWORD
    )
    text = error_text(browser, live_server, right)
    assert "Ask your administrator to give your account a unique email address" in text
    assert "set-cookie" not in right.headers
    assert transaction(live_server, started.tx).account_id is None


def test_disabled_account_is_told_only_after_the_right_password(
    live_server, app, person, browser
) -> None:
    with live_server.services.sessions() as db, db.begin():
        db.get(Account, person.account_id).disabled_at = dt.datetime.now(dt.UTC)
    started = start_sign_in(live_server, app, browser)
    wrong = post_signin(browser, live_server, started, email=person.email, password="nope nope 1")
    assert "Enter a correct email address" in error_text(browser, live_server, wrong)
    right = post_signin(browser, live_server, started, email=person.email, password=PASSWORD)
    assert "switched off" in error_text(browser, live_server, right)
    assert transaction(live_server, started.tx).stage == "password"


BAD_INPUT = {
    "empty email": ({"email": "", "password": PASSWORD}, "Enter your email address"),
    "empty password": ({"password": ""}, "Enter your password"),
    "1 MB password": ({"password": "x" * 1_000_000}, "What you entered is too long"),
    "missing csrf": ({"csrf_token": None}, "This page had expired, so nothing was sent"),
    "wrong csrf": ({"csrf_token": "forged"}, "This page had expired, so nothing was sent"),
    "huge csrf": ({"csrf_token": "a" * 5000}, "This page had expired, so nothing was sent"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_explained_and_the_journey_goes_on(
    live_server, app, person, browser, case
) -> None:
    changes, message = BAD_INPUT[case]
    started = start_sign_in(live_server, app, browser)
    page = parse_page(follow(browser, started.response, live_server).text)
    form = page.form_with("password")
    assert form is not None
    data = {**form.fields, "email": person.email, "password": PASSWORD, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    response = browser.post(f"{live_server.url}/signin?tx={started.tx}", data=data)
    assert response.status_code == 303
    shown = follow(browser, response, live_server)
    assert message in parse_page(shown.text).errors
    # Nothing half-written: no account on the transaction, no session, no enrolment.
    row = transaction(live_server, started.tx)
    assert (row.account_id, row.stage, row.completed_at) == (None, "password", None)
    assert session_count(live_server) == 0
    # The message shows once, and the same journey can still finish.
    again = browser.get(f"{live_server.url}/signin?tx={started.tx}")
    assert parse_page(again.text).errors == ""
    result = sign_in(
        browser, again, email=person.email, password=PASSWORD, totp_secret=person.totp_secret
    )
    assert result.response.headers["location"].startswith(app.redirect_uri)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"email": ["a"], "password": {"x": 1}}'),
        ("application/x-www-form-urlencoded", b"email=a%40b.c&email=c%40d.e&password=x"),
        ("application/x-www-form-urlencoded", b"email=%FF%FE&password=x"),
        ("multipart/form-data; boundary=x", b"--x--"),
    ],
    ids=["json", "repeated field", "not utf-8", "multipart"],
)
def test_wrong_types_are_refused_before_anything_runs(
    live_server, app, browser, content_type, body
) -> None:
    started = start_sign_in(live_server, app, browser)
    response = browser.post(
        f"{live_server.url}/signin?tx={started.tx}",
        content=body,
        headers={"content-type": content_type},
    )
    assert response.status_code == 303
    text = error_text(browser, live_server, response)
    assert "Something went wrong with the form. Enter your details again." in text
    assert transaction(live_server, started.tx).account_id is None


def test_expired_transaction_offers_start_again(live_server, app, person, browser) -> None:
    started = start_sign_in(live_server, app, browser)
    form = parse_page(follow(browser, started.response, live_server).text).form_with("password")
    with live_server.services.sessions() as db, db.begin():
        row = db.get(LoginTransaction, token_digest(started.tx))
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    posted = browser.post(
        f"{live_server.url}/signin?tx={started.tx}",
        data={**form.fields, "email": person.email, "password": PASSWORD},
    )
    assert posted.status_code == 303  # 303 after every POST, even a refused one
    page = follow(browser, posted, live_server)
    assert page.status_code == 410
    assert "Your sign-in timed out" in page.text
    assert transaction(live_server, started.tx).account_id is None
    start_again = next(f for f in [page.text] if "Start again" in f)
    href = start_again.split('class="nhsuk-button" href="', 1)[1].split('"', 1)[0]
    restarted = browser.get(live_server.url + href.replace("&amp;", "&"))
    assert restarted.status_code == 303
    assert restarted.headers["location"].startswith("/signin?tx=")
    result = sign_in(
        browser, restarted, email=person.email, password=PASSWORD, totp_secret=person.totp_secret
    )
    got = dict(parse_qsl(urlsplit(result.response.headers["location"]).query))
    assert got["state"] == started.state  # the same authorization request, started again


def test_back_button_after_success_cannot_sign_in_twice(live_server, app, person, browser) -> None:
    started = start_sign_in(live_server, app, browser)
    sign_in(
        browser, started.response, email=person.email, password=PASSWORD,
        totp_secret=person.totp_secret,
    )  # fmt: skip
    for path in ("/signin", "/signin/code", "/signin/setup", "/signin/consent"):
        page = browser.get(f"{live_server.url}{path}?tx={started.tx}")
        assert page.status_code == 410
        assert "You have already signed in" in page.text
        assert "Start again" in page.text
    sessions = session_count(live_server)
    with live_server.services.sessions() as db:
        csrf = db.get(LoginTransaction, token_digest(started.tx)).csrf_token
    resubmitted = browser.post(
        f"{live_server.url}/signin/code?tx={started.tx}", data={"csrf_token": csrf, "code": "1"}
    )
    assert resubmitted.status_code == 303
    assert follow(browser, resubmitted, live_server).status_code == 410
    assert session_count(live_server) == sessions


@pytest.mark.parametrize("tx", ["", "not-a-transaction", "x" * 5000])
def test_unknown_transaction_page(live_server, browser, tx) -> None:
    page = browser.get(f"{live_server.url}/signin", params={"tx": tx} if tx else None)
    assert page.status_code == 404
    assert "This sign-in link does not work" in page.text
    assert live_server.services.settings.support_contact in page.text


def test_a_wrong_password_is_refused_by_the_helper(live_server, app, person, browser) -> None:
    started = start_sign_in(live_server, app, browser)
    with pytest.raises(SignInFailed, match="Enter a correct email address"):
        sign_in(browser, started.response, email=person.email, password="wrong wrong 1")
    with live_server.services.sessions() as db:
        assert db.scalar(select(func.count()).select_from(TotpCredential)) == 1


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_form_posted_from_another_site_is_refused(
    live_server, app, person, browser, site
) -> None:
    """Login CSRF: whoever started a transaction knows its token, so a browser's Fetch
    Metadata saying the post came from elsewhere is refused, even with the right token."""
    started = start_sign_in(live_server, app, browser)
    form = parse_page(follow(browser, started.response, live_server).text).form_with("password")
    response = browser.post(
        f"{live_server.url}/signin?tx={started.tx}",
        data={**form.fields, "email": person.email, "password": PASSWORD},
        headers={"sec-fetch-site": site},
    )
    assert "This page had expired, so nothing was sent" in error_text(
        browser, live_server, response
    )
    assert transaction(live_server, started.tx).account_id is None
    same = browser.post(
        f"{live_server.url}/signin?tx={started.tx}",
        data={**form.fields, "email": person.email, "password": PASSWORD},
        headers={"sec-fetch-site": "same-origin"},
    )
    assert same.headers["location"] == f"/signin/code?tx={started.tx}"


def test_unicode_password_and_address_in_another_form(live_server, app, browser) -> None:
    """Any Unicode, NFKC-normalised (ASVS 6.2.x); the address in any case."""
    from tests.flows.signin import enrolled_account

    password = "\uff50äßwörd ünïcödé \uff14\uff12"  # full-width p, 4 and 2: NFKC folds them
    with live_server.services.sessions() as db, db.begin():
        _, secret = enrolled_account(
            db, live_server.services, email="zoë@example.org", password=password
        )
    started = start_sign_in(live_server, app, browser)
    result = sign_in(
        browser, started.response, email="ZOË@Example.org", password="päßwörd ünïcödé 42",
        totp_secret=secret,
    )  # fmt: skip
    assert result.response.headers["location"].startswith(app.redirect_uri)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"code": "1" * 20_000}, "What you entered is too long"),
        ({"code": "9" * 40}, "Enter the security code as 6 digits"),
        ({"csrf_token": ""}, "This page had expired, so nothing was sent"),
    ],
    ids=["huge code", "long code", "empty csrf"],
)
def test_bad_input_on_the_code_page(live_server, app, person, browser, fields, message) -> None:
    started = start_sign_in(live_server, app, browser)
    posted = post_signin(browser, live_server, started, email=person.email, password=PASSWORD)
    form = parse_page(follow(browser, posted, live_server).text).form_with("code")
    response = browser.post(
        f"{live_server.url}/signin/code?tx={started.tx}", data={**form.fields, **fields}
    )
    assert response.headers["location"] == f"/signin/code?tx={started.tx}"
    assert message in error_text(browser, live_server, response)
    row = transaction(live_server, started.tx)
    assert (row.stage, row.completed_at, row.amr) == ("mfa", None, ["pwd"])
    assert session_count(live_server) == 0


def test_login_hint_and_the_typed_address_fill_the_email_field(
    live_server, app, person, browser
) -> None:
    started = start_sign_in(live_server, app, browser, login_hint="hinted@example.org")
    page = parse_page(follow(browser, started.response, live_server).text)
    assert page.form_with("password").fields["email"] == "hinted@example.org"
    wrong = post_signin(
        browser, live_server, started, email="typed@example.org", password="x y z 1"
    )
    again = parse_page(follow(browser, wrong, live_server).text)
    assert again.form_with("password").fields["email"] == "typed@example.org"
    assert again.form_with("password").fields["password"] == ""  # never sent back


def test_a_double_submit_is_answered_twice_and_counted_once(
    live_server, app, person, browser
) -> None:
    """Two posts of the same form at once (a double click): both get a 303, neither a
    server error, and the transaction moves on once."""
    import concurrent.futures

    started = start_sign_in(live_server, app, browser)
    form = parse_page(follow(browser, started.response, live_server).text).form_with("password")
    data = {**form.fields, "email": person.email, "password": PASSWORD}

    def post() -> httpx.Response:
        return httpx.post(f"{live_server.url}/signin?tx={started.tx}", data=data)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: post(), range(4)))
    assert [r.status_code for r in responses] == [303] * 4
    assert {r.headers["location"] for r in responses} == {f"/signin/code?tx={started.tx}"}
    assert transaction(live_server, started.tx).stage == "mfa"
