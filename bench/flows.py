"""Full sign-in flows driven by a real OIDC client (Authlib's httpx client), for both
providers, and the helpers that mint authorization codes and refresh tokens for the
token-endpoint scenarios.

A flow: authorization request (PKCE S256, nonce, state) -> the sign-in page (email address
and password) -> the security code page (TOTP) -> back to the client with a code (state and
`iss` checked) -> code redemption by Authlib -> ID token validated (signature against the
JWKS, iss, aud, nonce, exp). Pages are recognised by their form fields (`password`, `code`),
as in tests/flows/signin.py, so the same driver works on our pages and on the peer's.

A TOTP code is accepted once per account, so each user signs in at most once per 30 s
time step; the pool is large enough for that (see `UserPicker`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pyotp
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from bench.common import PASSWORD, SCOPE, BenchUser
from bench.targets import Target

STEP = 30
# One SSL context for every client: httpx otherwise builds one (loading CA certificates)
# per client, which costs the load generator milliseconds per flow. Only http is used.
_SSL = ssl.create_default_context()


class FlowError(Exception):
    """A flow that did not end with validated tokens; `status` is the HTTP status seen."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------- pages
@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, str] = field(default_factory=dict)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.setup_key = False
        self._form: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("id") == "setup-key":
            self.setup_key = True
        if tag == "form" and a.get("method", "get").lower() == "post":
            self._form = Form(action=a.get("action", ""))
            self.forms.append(self._form)
        elif self._form is not None and a.get("name"):
            kind = a.get("type", "text")
            if tag == "button" or kind == "submit":
                self._form.buttons.setdefault(a["name"], a.get("value", ""))
            elif tag == "input" and (kind not in {"checkbox", "radio"} or "checked" in a):
                self._form.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def parse_forms(html: str) -> _Forms:
    p = _Forms()
    p.feed(html)
    p.close()
    return p


# ------------------------------------------------------------------------------- users
class UserPicker:
    """Hands out users whose TOTP code for the current time step is still unused, and
    who are in no other flow: a flow picked at the end of one step may send its code in
    the next, and must not share that step's code with a flow picked in it."""

    def __init__(self, users: list[BenchUser]) -> None:
        self.users = users
        self.last_step: dict[str, int] = {}
        self.in_flight: set[str] = set()
        self.next = 0
        self.waits = 0

    async def pick(self) -> BenchUser:
        """The next free user, marked in flight until `release`."""
        while True:
            step = int(time.time()) // STEP
            for _ in range(len(self.users)):
                u = self.users[self.next]
                self.next = (self.next + 1) % len(self.users)
                if self.last_step.get(u.id, -1) < step and u.id not in self.in_flight:
                    self.last_step[u.id] = step
                    self.in_flight.add(u.id)
                    return u
            self.waits += 1  # pool exhausted for this step: wait for the next one
            await asyncio.sleep((step + 1) * STEP - time.time() + 0.05)

    def release(self, user: BenchUser) -> None:
        """`user`'s flow is over (done or failed)."""
        self.in_flight.discard(user.id)

    def code(self, user: BenchUser) -> str:
        step = max(int(time.time()) // STEP, self.last_step.get(user.id, 0))
        self.last_step[user.id] = step
        return pyotp.TOTP(user.totp_secret).at(step * STEP)


# ------------------------------------------------------------------------------- flows
@dataclass
class FlowResult:
    token: dict[str, Any]
    claims: dict[str, Any]
    cookies: httpx.Cookies
    seconds: float


class Driver:
    """Runs flows against one target, sharing its JWKS and one connection pool."""

    def __init__(self, target: Target, users: list[BenchUser], picker: UserPicker | None = None):
        assert target.client
        self.target = target
        self.client = target.client
        self.picker = picker or UserPicker(users)
        self.keys: KeySet | None = None
        self.limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    def oauth(self, cookies: httpx.Cookies | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client.client_id,
            client_secret=self.client.client_secret,
            scope=SCOPE,
            redirect_uri=self.client.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",
            timeout=60.0,
            cookies=cookies,
            limits=self.limits,
            verify=_SSL,
        )

    async def load_keys(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(self.target.url("jwks"))
            if r.status_code != 200:
                raise FlowError(f"JWKS answered {r.status_code}", r.status_code)
            self.keys = KeySet.import_key_set(r.json())

    def authorization_url(self, oauth: AsyncOAuth2Client) -> tuple[str, str, str, str]:
        verifier = generate_token(48)
        nonce = generate_token(20)
        url, state = oauth.create_authorization_url(
            self.target.url("authorization"), code_verifier=verifier, nonce=nonce
        )
        return url, state, verifier, nonce

    async def sign_in(self) -> FlowResult:
        """One complete flow for the next free user."""
        user = await self.picker.pick()
        started = time.perf_counter()
        try:
            async with self.oauth() as oauth:
                url, state, verifier, nonce = self.authorization_url(oauth)
                r = await oauth.request("GET", url, follow_redirects=False, withhold_token=True)
                back = await self._walk(oauth, r, user)
                token = await self._redeem(oauth, back, state, verifier)
                claims = self.validate_id_token(token, nonce)
                return FlowResult(
                    token, claims, httpx.Cookies(oauth.cookies), time.perf_counter() - started
                )
        finally:
            self.picker.release(user)

    async def _walk(self, oauth: AsyncOAuth2Client, r: httpx.Response, user: BenchUser) -> str:
        """Follow redirects and fill pages until the provider sends the browser back."""
        for _ in range(16):
            if r.is_redirect:
                location = urljoin(str(r.url), r.headers["location"])
                if location.startswith(self.client.redirect_uri):
                    return location
                r = await oauth.request(
                    "GET", location, follow_redirects=False, withhold_token=True
                )
                continue
            if r.status_code != 200 or "html" not in r.headers.get("content-type", ""):
                raise FlowError(
                    f"{r.request.method} {r.url.path} answered {r.status_code}", r.status_code
                )
            page = parse_forms(r.text)
            form = next((f for f in page.forms if "password" in f.fields), None)
            values: dict[str, str] = {}
            if form is not None:
                values = {"email": user.email, "password": PASSWORD}
            elif page.setup_key:
                raise FlowError("the provider asks to set up an authenticator: seeding failed")
            elif form := next((f for f in page.forms if "code" in f.fields), None):
                values = {"code": self.picker.code(user)}
            elif form := next((f for f in page.forms if "decision" in f.buttons), None):
                values = {"decision": "allow"}
            else:
                raise FlowError(f"no form to fill on {r.url.path}", r.status_code)
            action = urljoin(str(r.url), form.action or str(r.url))
            r = await oauth.request(
                "POST",
                action,
                data={**form.fields, **values},
                follow_redirects=False,
                withhold_token=True,
            )
        raise FlowError(f"too many steps, the last on {r.url.path}")

    async def _redeem(
        self, oauth: AsyncOAuth2Client, back: str, state: str, verifier: str
    ) -> dict[str, Any]:
        query = parse_qs(urlsplit(back).query)
        if "code" not in query:
            raise FlowError(f"no code in the redirect: {query.get('error')}")
        if query.get("state", [""])[0] != state:
            raise FlowError("state mismatch")
        if query.get("iss", [self.target.issuer])[0] != self.target.issuer:
            raise FlowError("iss mismatch")
        try:
            token = await oauth.fetch_token(
                self.target.url("token"),
                authorization_response=back,
                code_verifier=verifier,
                state=state,
            )
        except Exception as exc:  # Authlib raises OAuthError subclasses
            raise FlowError(f"code redemption failed: {exc}") from exc
        return dict(token)

    def validate_id_token(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        assert self.keys is not None, "load_keys() first"
        raw = token.get("id_token")
        if not raw:
            raise FlowError("no id_token in the token response")
        decoded = jwt.decode(raw, self.keys, algorithms=["RS256", "ES256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.target.issuer},
            aud={"essential": True, "value": self.client.client_id},
            nonce={"essential": True, "value": nonce},
            sub={"essential": True},
            exp={"essential": True},
        ).validate(decoded.claims)
        return dict(decoded.claims)

    # -------------------------------------------------------------- code minting (SSO)
    async def mint_codes(
        self,
        sessions: list[httpx.Cookies],
        n: int,
        concurrency: int = 16,
        max_seconds: float | None = None,
    ) -> list[str]:
        """`n` authorization codes issued at once through single sign-on (the browser
        session of an earlier flow): no password or TOTP work, so codes are cheap to mint.
        Returns token-request bodies (form-encoded) ready for redemption. With `max_seconds`,
        minting stops early, so that every code can still be redeemed within its lifetime."""
        from urllib.parse import urlencode

        out: list[str] = []
        sem = asyncio.Semaphore(concurrency)
        browsers = [self.oauth(c) for c in sessions]
        deadline = time.monotonic() + max_seconds if max_seconds else None

        async def one(i: int) -> None:
            oauth = browsers[i % len(browsers)]
            async with sem:
                if deadline is not None and time.monotonic() > deadline:
                    return
                url, _state, verifier, _ = self.authorization_url(oauth)
                r = await oauth.request("GET", url, follow_redirects=False, withhold_token=True)
                for _ in range(4):
                    if not r.is_redirect:
                        break
                    loc = urljoin(str(r.url), r.headers["location"])
                    if loc.startswith(self.client.redirect_uri):
                        code = parse_qs(urlsplit(loc).query).get("code", [""])[0]
                        if code:
                            out.append(
                                urlencode(
                                    {
                                        "grant_type": "authorization_code",
                                        "code": code,
                                        "redirect_uri": self.client.redirect_uri,
                                        "code_verifier": verifier,
                                    }
                                )
                            )
                        return
                    r = await oauth.request("GET", loc, follow_redirects=False, withhold_token=True)
                raise FlowError(
                    f"single sign-on did not issue a code ({r.status_code} {r.url.path})"
                )

        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            for b in browsers:
                await b.aclose()
        return out

    async def redeem_bodies(self, bodies: list[str], concurrency: int = 16) -> list[dict[str, Any]]:
        """Redeem codes (unmeasured preparation), returning the token responses."""
        sem = asyncio.Semaphore(concurrency)
        auth = (self.client.client_id, self.client.client_secret)
        async with httpx.AsyncClient(timeout=60, limits=self.limits, verify=_SSL) as http:

            async def one(body: str) -> dict[str, Any]:
                async with sem:
                    r = await http.post(
                        self.target.url("token"),
                        content=body,
                        auth=auth,
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    )
                    if r.status_code != 200:
                        raise FlowError(
                            f"token endpoint answered {r.status_code}: {r.text[:200]}",
                            r.status_code,
                        )
                    return dict(r.json())

            return list(await asyncio.gather(*(one(b) for b in bodies)))


@dataclass
class FlowRun:
    flows: int
    failures: int
    seconds: float
    latencies: list[float]
    errors: list[str]
    waits: int


async def run_flows(
    driver: Driver, *, concurrency: int, duration: float, max_flows: int | None = None
) -> FlowRun:
    """Run complete sign-in flows with `concurrency` concurrent browsers for `duration` s."""
    latencies: list[float] = []
    errors: list[str] = []
    failures = 0
    deadline = time.perf_counter() + duration
    started = time.perf_counter()
    last_done = started
    waits_before = driver.picker.waits

    async def browser() -> None:
        nonlocal failures, last_done
        while time.perf_counter() < deadline and (max_flows is None or len(latencies) < max_flows):
            try:
                res = await driver.sign_in()
            except (FlowError, httpx.HTTPError) as exc:
                failures += 1
                if len(errors) < 5:
                    errors.append(str(exc)[:300])
                if failures > 20 and not latencies:
                    return
                continue
            latencies.append(res.seconds)
            last_done = time.perf_counter()

    await asyncio.gather(*(browser() for _ in range(concurrency)))
    return FlowRun(
        flows=len(latencies),
        failures=failures,
        seconds=max(last_done - started, 1e-9),
        latencies=latencies,
        errors=errors,
        waits=driver.picker.waits - waits_before,
    )
