"""Drive the hosted sign-in pages over real HTTP, like a browser without JavaScript.

Shared by the protocol's flow tests and the pages' tests. `complete_sign_in` starts from
the provider's 303 to `/signin?tx=...`, fills every page it meets (email and password,
authenticator setup, security code, consent), and returns the response that leaves the
provider for the client's redirect URI (a 302/303 with the code, or the `form_post` page).

Pages are recognised by their form fields, never by wording: `password` (sign-in),
`code` plus the element with id `setup-key` (setup), `code` (security code), a `decision`
button (consent). Forms are parsed with the standard library's `html.parser`.

A TOTP code is accepted once only (NIST 800-63B 3.1.4), so this module remembers the last
time step it used per secret and takes the next step when the current one is spent; tests
that drive a clock of their own pass `at` (Unix seconds) instead.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Literal
from urllib.parse import urljoin, urlsplit

import httpx
import pyotp

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from idp.app import Services
    from idp.models import Account
    from tests.conftest import LiveServer
    from tests.flows.oidc import Person, RegisteredClient

TOTP_PERIOD = 30
_last_step: dict[str, int] = {}


class SignInFailed(AssertionError):  # noqa: N818 (reads as the test failure it is)
    """The journey stopped on a page that shows an error or that the helper cannot fill."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response


@dataclass
class Form:
    """One `<form>`: its action, method, field values and named submit buttons."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Page:
    """What the helper needs from a hosted page."""

    forms: list[Form]
    setup_key: str | None
    errors: str
    heading: str

    def form_with(self, name: str) -> Form | None:
        """The first form with an input or button called `name`."""
        return next((f for f in self.forms if name in f.fields or name in f.buttons), None)

    @property
    def kind(self) -> str:
        """`password`, `setup`, `code`, `consent`, or `other`."""
        if self.form_with("password"):
            return "password"
        if self.form_with("code"):
            return "setup" if self.setup_key else "code"
        if self.form_with("decision"):
            return "consent"
        return "other"


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._capture: list[tuple[str, int]] = []  # (what, tag depth) being captured
        self._depth = 0
        self.text: dict[str, list[str]] = {"key": [], "errors": [], "h1": []}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag not in {"input", "br", "img", "meta", "link", "hr"}:
            self._depth += 1
        if tag == "form":
            self._form = Form(action=a.get("action", ""), method=a.get("method", "get").lower())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            if a.get("type", "text") in {"submit", "button"}:
                self._form.buttons.setdefault(a["name"], []).append(a.get("value", ""))
            elif a.get("type") not in {"checkbox", "radio"} or "checked" in a:
                self._form.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self._form is not None and a.get("name"):
            self._form.buttons.setdefault(a["name"], []).append(a.get("value", ""))
        if a.get("id") == "setup-key":
            self._capture.append(("key", self._depth))
        elif ("error-summary" in a.get("class", "") or a.get("role") == "alert") and not any(
            what == "errors" for what, _ in self._capture
        ):
            self._capture.append(("errors", self._depth))
        elif tag == "h1":
            self._capture.append(("h1", self._depth))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        if self._capture and self._capture[-1][1] == self._depth:
            self._capture.pop()
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        for what, _ in self._capture:
            self.text[what].append(data)


def parse_page(html: str) -> Page:
    """Forms, setup key, error summary text and heading of a hosted page."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    key = "".join("".join(parser.text["key"]).split()) or None
    return Page(
        forms=parser.forms,
        setup_key=key,
        errors=" ".join(" ".join(parser.text["errors"]).split()),
        heading=" ".join(" ".join(parser.text["h1"]).split()),
    )


def totp_code(secret: str, *, at: float | None = None) -> str:
    """A code for `secret`: at `at` if given, else for the next time step not yet used
    by this process (waiting for it only if it is more than one step ahead)."""
    if at is not None:
        step = int(at) // TOTP_PERIOD
    else:
        now = time.time()
        step = max(int(now) // TOTP_PERIOD, _last_step.get(secret, -1) + 1)
        ahead = step * TOTP_PERIOD - now
        if ahead > TOTP_PERIOD:  # beyond the one step of drift the server allows
            time.sleep(ahead - TOTP_PERIOD + 0.05)
    _last_step[secret] = max(step, _last_step.get(secret, -1))
    return pyotp.TOTP(secret).at(step * TOTP_PERIOD)


def mark_code_used(secret: str, *, at: float | None = None) -> None:
    """Tell the helper a code of the step at `at` (default now) was used elsewhere."""
    step = int(time.time() if at is None else at) // TOTP_PERIOD
    _last_step[secret] = max(step, _last_step.get(secret, -1))


@dataclass
class SignInResult:
    """The response leaving the provider, the secret used, and the pages passed."""

    response: httpx.Response
    totp_secret: str | None
    pages: list[str] = field(default_factory=list)


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parts = urlsplit(str(url))
    return parts.scheme, parts.hostname or "", parts.port


def _submit(
    client: httpx.Client, response: httpx.Response, form: Form, **values: str
) -> httpx.Response:
    url = urljoin(str(response.url), form.action or str(response.url))
    return client.post(url, data={**form.fields, **values}, follow_redirects=False)


def sign_in(
    client: httpx.Client,
    response: httpx.Response,
    *,
    email: str,
    password: str,
    totp_secret: str | None = None,
    at: float | None = None,
    setup: Literal["enrol", "skip"] = "enrol",
    consent: Literal["allow", "deny"] = "allow",
    max_steps: int = 16,
) -> SignInResult:
    """Complete the journey; see the module docstring. On the setup page the key is read
    from the page text (id `setup-key`) and returned as `totp_secret`; `setup="skip"`
    presses "Skip for now" when the page offers it (before MFA is mandatory)."""
    origin = _origin(response.url)
    result = SignInResult(response=response, totp_secret=totp_secret)
    current, posted_kind = response, ""
    for _ in range(max_steps):
        if current.is_redirect:
            location = urljoin(str(current.url), current.headers["location"])
            if _origin(location) != origin:
                result.response = current
                return result
            current = client.get(location, follow_redirects=False)
            continue
        page = parse_page(current.text)
        kind = page.kind
        if kind == "other" and any(f.method == "post" for f in page.forms):
            # form_post response mode: an auto-submitting form to the client.
            post = next(f for f in page.forms if f.method == "post")
            if _origin(urljoin(str(current.url), post.action)) != origin:
                result.response = current
                return result
        if (page.errors and kind == posted_kind) or kind == "other":
            raise SignInFailed(
                f"sign-in stopped on {current.url} ({current.status_code}): "
                f"{page.errors or page.heading or current.text[:300]}",
                current,
            )
        result.pages.append(kind)
        posted_kind = kind
        if kind == "password":
            form = page.form_with("password")
            assert form is not None
            current = _submit(client, current, form, email=email, password=password)
        elif kind == "setup" and setup == "skip" and page.form_with("skip"):
            form = page.form_with("skip")
            assert form is not None
            current = _submit(client, current, form, skip=form.buttons["skip"][0])
        elif kind == "setup":
            assert page.setup_key is not None
            result.totp_secret = page.setup_key
            form = page.form_with("code")
            assert form is not None
            current = _submit(client, current, form, code=totp_code(page.setup_key, at=at))
        elif kind == "code":
            if result.totp_secret is None:
                raise SignInFailed("the code page needs a totp_secret", current)
            form = page.form_with("code")
            assert form is not None
            current = _submit(client, current, form, code=totp_code(result.totp_secret, at=at))
        else:
            form = page.form_with("decision")
            assert form is not None
            current = _submit(client, current, form, decision=consent)
    raise SignInFailed(f"no way out of the sign-in pages after {max_steps} steps", current)


def complete_sign_in(
    client: httpx.Client,
    response: httpx.Response,
    *,
    email: str,
    password: str,
    totp_secret: str | None,
    at: float | None = None,
) -> httpx.Response:
    """Sign in from the 303 to `/signin?tx=...`; return the redirect to the client."""
    return sign_in(
        client, response, email=email, password=password, totp_secret=totp_secret, at=at
    ).response


def enrolled_account(
    db: Session,
    services: Services,
    *,
    email: str,
    password: str,
    now: dt.datetime | None = None,
) -> tuple[Account, str]:
    """Create an account with a confirmed authenticator; return it and the TOTP secret.

    The credential is written directly (no code is spent), so the first sign-in may use
    the current step. Flushes; the caller's transaction commits.
    """
    from idp.accounts import totp
    from idp.admin.users import create_account
    from idp.models import TotpCredential

    del now
    account = create_account(db, email=email, password=password)
    secret = totp.new_secret()
    db.add(
        TotpCredential(
            account_id=account.id,
            secret_encrypted=totp.encrypt_secret(services.encryptor, secret, account_id=account.id),
        )
    )
    db.flush()
    return account, secret


@dataclass
class Started:
    """An authorization request sent by a relying party: the 303 to the sign-in pages,
    the PKCE verifier, and the client's `state`."""

    response: httpx.Response
    code_verifier: str
    state: str

    @property
    def tx(self) -> str:
        """The transaction id in the 303's `/signin?tx=...`."""
        from urllib.parse import parse_qs

        return parse_qs(urlsplit(self.response.headers["location"]).query)["tx"][0]


def start_sign_in(
    server: LiveServer, client: RegisteredClient, browser: httpx.Client, **params: str
) -> Started:
    """Send `browser` to `/authorize` as `client` would (Authlib's client, PKCE S256)
    and check it was sent on to the sign-in pages."""
    import secrets

    from tests.flows.oidc import oauth_client, pkce_pair

    verifier, challenge = pkce_pair()
    params.setdefault("state", secrets.token_urlsafe(12))
    url, _ = oauth_client(server, client).create_authorization_url(
        f"{server.url}/authorize", code_challenge=challenge, code_challenge_method="S256", **params
    )
    response = browser.get(url, follow_redirects=False)
    assert response.status_code == 303, (response.status_code, response.text[:300])
    assert response.headers["location"].startswith("/signin?tx="), response.headers["location"]
    return Started(response, verifier, params["state"])


class _Held(Exception):  # noqa: N818
    """Raised to stop a browser just before it hands the sign-in back."""


@dataclass
class Completed:
    """A sign-in finished on the pages, its browser stopped before `/authorize/resume`
    (the caller closes `browser`)."""

    browser: httpx.Client
    resume_url: str
    code_verifier: str
    tx: str


def sign_in_until_resume(
    server: LiveServer, client: RegisteredClient, person: Person, **params: str
) -> Completed:
    """A new browser signed in on the pages as `person`, for `client`, stopped before it
    follows the 303 to `/authorize/resume`, which it may then follow (or not) itself."""
    held: list[str] = []

    def hold_resume(request: httpx.Request) -> None:
        if request.url.path == "/authorize/resume" and not held:
            held.append(str(request.url))
            raise _Held

    browser = httpx.Client(event_hooks={"request": [hold_resume]})
    try:
        started = start_sign_in(server, client, browser, **params)
        try:
            complete_sign_in(
                browser,
                started.response,
                email=person.email,
                password=person.password,
                totp_secret=person.totp_secret,
            )
        except _Held:
            return Completed(browser, held[0], started.code_verifier, started.tx)
        raise AssertionError("the sign-in did not reach /authorize/resume")
    except BaseException:
        browser.close()
        raise
